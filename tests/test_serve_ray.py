"""dynashape serve --ray --replicas 2: two replicas of the server behind Ray Serve's HTTP proxy on
127.0.0.1, each with its own engine; the same API; SIGTERM shuts Ray down and leaves no process."""
from __future__ import annotations

import os
import time
import urllib.request

import pytest

pytest.importorskip("ray")
openai = pytest.importorskip("openai")

from serve_helpers import ServerProcess, build_engine, metrics, rand_prompts  # noqa: E402

from dynashape import api  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Ray's daemons, workers and replicas)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "tiny"
    build_engine(out, tokenizer=False)
    return out


def test_two_replicas_behind_ray_proxy(engine_dir):
    offline = api.load(engine_dir)
    t0 = time.monotonic()
    s = ServerProcess(str(engine_dir), "--ray", "--replicas", "2", "--model-name", "tiny", ready_timeout=180,
                      env={"RAY_USAGE_STATS_ENABLED": "0"})
    try:
        print(f"ray up in {time.monotonic() - t0:.1f} s")
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        prompts = rand_prompts([3, 8, 15, 30], seed=7)
        replicas = set()
        for i in range(40):
            p = prompts[i % len(prompts)]
            raw = client.completions.with_raw_response.create(model="tiny", prompt=p, max_tokens=6, temperature=0,
                                                              extra_body={"ignore_eos": True})
            replicas.add(raw.headers["x-dynashape-replica"])
            assert raw.parse().choices[0].token_ids == offline.generate([p], 6, ignore_eos=True)[0]
            if len(replicas) == 2 and i >= 3:
                break
        assert len(replicas) == 2, replicas

        chunks = list(client.completions.create(model="tiny", prompt=prompts[1], max_tokens=10, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True}))
        assert sum((c.choices[0].token_ids for c in chunks), []) == offline.generate([prompts[1]], 10, ignore_eos=True)[0]
        assert chunks[-1].choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError) as ei:
            client.completions.create(model="tiny", prompt=list(range(60)), max_tokens=10)
        assert ei.value.body["param"] == "max_tokens" and "Fix: " in ei.value.body["message"]
        with urllib.request.urlopen(s.url + "/health", timeout=10) as r:
            assert r.status == 200
        assert metrics(s.url)[("__type__", "dynashape_ttft_seconds")] == "histogram"

        family = descendants(s.proc.pid)
        assert len(family) >= 4                       # gcs, raylet, controller, proxy, replicas, ...
        t0 = time.monotonic()
        assert s.terminate(timeout=90) == 0, s.output
        print(f"ray down in {time.monotonic() - t0:.1f} s")
        time.sleep(1.0)
        assert not [p for p in family if alive(p)], "Ray processes left behind"
    finally:
        s.kill()
