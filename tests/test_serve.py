"""dynashape serve: the server as a real process on a loopback port, driven by the official openai
client and raw HTTP; greedy and seeded outputs equal offline generation; every bad request; 429;
disconnects; SIGTERM; /metrics; the request log. Faults and slow loads use an in-process server."""
from __future__ import annotations

import concurrent.futures as cf
import http.client
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_helpers import (ServerProcess, build_engine, metrics, open_stream, outcome, post,  # noqa: E402
                           rand_prompts, read_all_events, read_event, wait_until)

from dynashape import api  # noqa: E402
from dynashape.runtime.sampling import SamplingSettings  # noqa: E402

pytestmark = pytest.mark.integration
EOS = 999


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "tiny"
    build_engine(out, tokenizer=True)
    return out


@pytest.fixture(scope="module")
def offline(engine_dir):
    return api.load(engine_dir)


@pytest.fixture(scope="module")
def server(engine_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "traffic.jsonl"
    s = ServerProcess(str(engine_dir), "--model-name", "tiny", "--max-queue", "64", "--log-requests", str(log))
    s.log = log
    yield s
    assert s.terminate() == 0, s.output


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def expected(offline, prompt, n, sampling=None):
    """Offline tokens as the server returns them: up to (not including) EOS."""
    out = offline.generate([prompt], n, sampling or SamplingSettings())[0]
    return out[:out.index(EOS)] if EOS in out else out


# ---- completions through the openai client --------------------------------------------------------------

def test_ids_prompt_matches_offline_and_usage(client, offline):
    prompt = rand_prompts([7], seed=1)[0]
    c = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
    ch = c.choices[0]
    want = expected(offline, prompt, 12)
    assert ch.token_ids == want and ch.text == offline.tokenizer.decode(want)
    assert c.object == "text_completion" and c.model == "tiny" and c.id.startswith("cmpl-") and ch.index == 0
    assert ch.finish_reason == ("length" if len(want) == 12 else "stop")
    assert (c.usage.prompt_tokens, c.usage.total_tokens) == (7, 7 + c.usage.completion_tokens)


def test_text_prompt_stream_equals_whole_and_offline(client, offline):
    tok = offline.tokenizer
    whole = client.completions.create(model="tiny", prompt="hello wcn é", max_tokens=20, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="hello wcn é", max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    want = expected(offline, tok.encode("hello wcn é"), 20)
    assert whole.choices[0].text == tok.decode(want)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert sum((c.choices[0].token_ids for c in chunks if c.choices), []) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stop_string_cuts_text(client, offline):
    tok = offline.tokenizer
    prompt = rand_prompts([5], seed=2)[0]
    full = tok.decode(expected(offline, prompt, 30))
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip() and len(full) > 10
    cut = full[:full.index(stop)]
    for stream in (False, True):
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=30, temperature=0, stop=[stop, "@@"],
                                      stream=stream)
        chunks = list(r) if stream else [r]
        assert "".join(c.choices[0].text for c in chunks) == cut
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_token_ids_and_multiple_prompts(client, offline):
    prompts = rand_prompts([3, 9], seed=3)
    want = [expected(offline, p, 10) for p in prompts]
    stop_id = want[1][4]
    c = client.completions.create(model="tiny", prompt=prompts, max_tokens=10, temperature=0,
                                  extra_body={"stop_token_ids": [stop_id]})
    assert [ch.index for ch in c.choices] == [0, 1]
    for ch, w in zip(c.choices, want):
        cut = w[:w.index(stop_id)] if stop_id in w else w
        assert ch.token_ids == cut
    assert c.choices[1].finish_reason == "stop"
    assert c.usage.prompt_tokens == 12


def test_concurrent_clients_equal_offline(server, offline):
    """16 clients at once on a batch-4 engine: requests join and leave the running batch between steps;
    each greedy or seeded-sampled output equals offline generation of the same prompt."""
    lengths = [1, 2, 5, 9, 17, 33, 40, 3, 12, 25, 7, 30, 4, 20, 11, 6]
    prompts = rand_prompts(lengths, seed=4)
    jobs = [(p, 4 + (i * 7) % 20, SamplingSettings(0.8, 0, 0.9, seed=i) if i % 3 == 0 else SamplingSettings())
            for i, p in enumerate(prompts)]

    def one(job):
        p, n, s = job
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        body = dict(model="tiny", prompt=p, max_tokens=n, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
        if len(p) % 2:
            return sum((ch.choices[0].token_ids for ch in c.completions.create(**body, stream=True)), [])
        return c.completions.create(**body).choices[0].token_ids

    with cf.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, jobs, timeout=120))
    assert got == [expected(offline, p, n, s) for p, n, s in jobs]


# ---- refusals -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,param,needle", [
    (dict(prompt=[1, 2], max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (dict(prompt=list(range(60)), max_tokens=10), "max_tokens", "beyond this engine's 64"),
    (dict(prompt=list(range(70)), max_tokens=1), "prompt", "beyond this engine's 64"),
    (dict(prompt=[5, 1000], max_tokens=2), "prompt", "outside the vocabulary"),
    (dict(prompt=[5], max_tokens=2, n=2), "n", "not supported"),
    (dict(prompt=[5], max_tokens=2, temperature=3), "temperature", "less than or equal to 2"),
    (dict(prompt="", max_tokens=2), "prompt", "empty"),
])
def test_bad_requests_are_400_with_fix(client, kwargs, param, needle):
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model="tiny", **kwargs)
    e = ei.value
    assert e.status_code == 400 and e.body["type"] == "invalid_request_error" and e.body["param"] == param
    assert needle in e.body["message"] and "Fix: " in e.body["message"] and "\n" not in e.body["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.completions.create(model="gpt-9", prompt=[1], max_tokens=1)
    assert ei.value.body["code"] == "model_not_found" and 'send "model": "tiny"' in ei.value.body["message"]


@pytest.mark.parametrize("body,needle", [
    (b'{"model": "tiny", "prompt": [1], "max_tokens": "x"}', "max_tokens: Input should be a valid integer"),
    (b'{"model": "tiny", "prompt": [1], "max_tokens": 2.5}', "max_tokens: Input should be a valid integer"),
    (b'{"model": "tiny", "prompt": [1], "stream": "yes"}', "stream: Input should be a valid boolean"),
    (b'{"model": "tiny", "prompt": [1], "temperature": "hot"}', "temperature: Input should be a valid number"),
    (b'{"model": "tiny",', "not valid JSON"),
    (b'[1, 2]', "not an object"),
    (b'{"prompt": [1]}', "model is required"),
    (b'{"model": "tiny", "prompt": [1.5]}', "prompt must be a string, a list of strings"),
    (b'{"model": "tiny", "prompt": {"a": 1}}', "prompt must be a string"),
    (b'{"model": "tiny", "prompt": [1], "stop_token_ids": [5000]}', "outside the vocabulary"),
    (b'{"model": "tiny", "prompt": [1], "top_k": 9223372036854775808}', "top_k: Input should be less than"),
])
def test_malformed_bodies_are_400(server, body, needle):
    status, headers, data = post(server.url, body)
    assert status == 400, data
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}
    assert needle in data["error"]["message"] and "Fix: " in data["error"]["message"]


def test_unknown_fields_ignored_and_curl_content_type(server, offline):
    """curl -d sends application/x-www-form-urlencoded; the body is JSON all the same."""
    body = b'{"model": "tiny", "prompt": [3, 4], "max_tokens": 2, "temperature": 0, "xyz": {"a": []}}'
    status, _, data = post(server.url, body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and data["choices"][0]["token_ids"] == expected(offline, [3, 4], 2)
    status, _, data = post(server.url, b"", path="/v1/nothing")
    assert status == 404 and "Fix: use POST /v1/completions" in data["error"]["message"]


# ---- models, health, metrics, request log -------------------------------------------------------------------

def test_models_health_metrics(server, client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    before = metrics(server.url)
    client.completions.create(model="tiny", prompt=[1, 2, 3], max_tokens=5, temperature=0,
                              extra_body={"ignore_eos": True})
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=[1], max_tokens=0)
    after = metrics(server.url)
    assert outcome(after, "ok") == outcome(before, "ok") + 1
    assert outcome(after, "invalid") == outcome(before, "invalid") + 1
    assert after[("dynashape_generated_tokens_total", ())] - before[("dynashape_generated_tokens_total", ())] == 5
    assert after[("dynashape_prompt_tokens_total", ())] - before[("dynashape_prompt_tokens_total", ())] == 3
    assert after[("__type__", "dynashape_queue_depth")] == after[("__type__", "dynashape_running_batch")] == "gauge"
    for h in ("dynashape_ttft_seconds", "dynashape_tpot_seconds"):
        assert after[("__type__", h)] == "histogram"
        assert after[(h + "_count", ())] == after[(h + "_bucket", (("le", "+Inf"),))] >= 1
    assert after[("dynashape_ttft_seconds_count", ())] == before[("dynashape_ttft_seconds_count", ())] + 1


def test_request_log(server, client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=list(range(63)), max_tokens=5)
    client.completions.create(model="tiny", prompt=[[1, 2], [3, 4, 5]], max_tokens=3)
    rows = [json.loads(x) for x in server.log.read_text().splitlines()]
    assert {"t", "prompt_len", "max_tokens", "inflight", "ok"} <= set(rows[-1])
    assert [(r["prompt_len"], r["max_tokens"], r["ok"]) for r in rows[-3:]] == [(63, 5, False), (2, 3, True),
                                                                                (3, 3, True)]
    assert rows[-1]["inflight"] >= 2 and rows[-1]["t"] >= rows[-3]["t"]


# ---- a slow engine: queue limits, disconnects, SIGTERM --------------------------------------------------------

@pytest.fixture(scope="module")
def slow():
    """random:distilgpt2 compiled in memory (tens of ms per step on a CPU, so requests stay in flight),
    2 rows at once, 1 waiting; no tokenizer."""
    s = ServerProcess("random:distilgpt2", "--seq", "1:64", "--batch", "1:2", "--max-queue", "1",
                      "--shutdown-timeout", "30")
    yield s
    s.terminate()


def test_no_tokenizer_ids_as_text(slow):
    status, _, data = post(slow.url, {"model": "random:distilgpt2", "prompt": "hi", "max_tokens": 2})
    assert status == 400 and "send \"prompt\": [464, 3290]" in data["error"]["message"]
    status, _, data = post(slow.url, {"model": "random:distilgpt2", "prompt": [464], "max_tokens": 3,
                                      "stop": "x"})
    assert status == 400 and data["error"]["param"] == "stop"
    body = {"model": "random:distilgpt2", "prompt": [464, 3290], "max_tokens": 3, "temperature": 0, "ignore_eos": True}
    status, _, data = post(slow.url, body)
    ch = data["choices"][0]
    assert status == 200 and ch["text"] == ",".join(map(str, ch["token_ids"])) and len(ch["token_ids"]) == 3
    c, r = open_stream(slow.url, body)
    events = [json.loads(e) for e in read_all_events(r)[:-1]]
    c.close()
    assert "".join(e["choices"][0]["text"] for e in events) == ch["text"]


def test_full_server_is_429_with_retry_after(slow):
    body = {"model": "random:distilgpt2", "prompt": [464], "max_tokens": 60, "ignore_eos": True}
    streams = []
    try:
        for _ in range(2):
            streams.append(open_stream(slow.url, body))
            read_event(streams[-1][1])                 # running
        streams.append(open_stream(slow.url, body))    # waiting (the queue holds 1)
        m = wait_until(lambda: (lambda m: m if m[("dynashape_queue_depth", ())] == 1 else None)(metrics(slow.url)),
                       what="one queued")
        assert m[("dynashape_running_batch", ())] == 2         # the batch never exceeds the plan (--batch 1:2)
        client = openai.OpenAI(base_url=slow.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        with pytest.raises(openai.RateLimitError) as ei:
            client.completions.create(model="random:distilgpt2", prompt=[1], max_tokens=1)
        e = ei.value
        assert e.status_code == 429 and e.response.headers["retry-after"] == "1"
        assert e.body["type"] == "rate_limit_error" and "--max-queue 1" in e.body["message"]
    finally:
        for c, _ in streams:
            c.close()
    wait_until(lambda: metrics(slow.url)[("dynashape_running_batch", ())] == 0, what="slots freed")


def test_short_request_does_not_wait_for_a_long_one(slow):
    """Continuous batching: a 2-token request joins the running batch and finishes while most of the
    60-token request that was already running is still to come (arrival times read as they come)."""
    c, r = open_stream(slow.url, {"model": "random:distilgpt2", "prompt": [464], "max_tokens": 60, "ignore_eos": True})
    arrivals = []                                  # (time, tokens) of the long stream's events

    def read_long():
        while (e := read_event(r)) != "[DONE]":
            arrivals.append((time.monotonic(), len(json.loads(e)["choices"][0]["token_ids"])))
    reader = threading.Thread(target=read_long)
    reader.start()
    try:
        wait_until(lambda: arrivals, what="the long request running")
        status, _, data = post(slow.url, {"model": "random:distilgpt2", "prompt": [1, 2], "max_tokens": 2,
                                          "temperature": 0, "ignore_eos": True})
        done = time.monotonic()
        assert status == 200 and len(data["choices"][0]["token_ids"]) == 2
        reader.join(60)
        assert sum(n for _, n in arrivals) == 60
        assert sum(n for t, n in arrivals if t > done) >= 20
    finally:
        c.close()
        reader.join(10)


def test_disconnect_mid_stream_frees_slot(slow):
    before = metrics(slow.url)
    c, r = open_stream(slow.url, {"model": "random:distilgpt2", "prompt": [464], "max_tokens": 60, "ignore_eos": True})
    read_event(r), read_event(r)
    c.close()
    m = wait_until(lambda: (lambda m: m if m[("dynashape_running_batch", ())] == 0 else None)(metrics(slow.url)),
                   what="slot freed")
    assert outcome(m, "cancelled") == outcome(before, "cancelled") + 1
    made = m[("dynashape_generated_tokens_total", ())] - before[("dynashape_generated_tokens_total", ())]
    assert made < 40                                    # stopped early: the 60-token budget did not run out
    status, _, data = post(slow.url, {"model": "random:distilgpt2", "prompt": [1], "max_tokens": 2})
    assert status == 200


def _drain(url, body, out):
    try:
        c, r = open_stream(url, body)
        out["first"] = read_event(r)
        out["started"].set()
        out["events"] = [out["first"]] + read_all_events(r)
        c.close()
    except Exception as e:  # noqa: BLE001 - reported by the test
        out["error"] = repr(e)
        out["started"].set()


def test_sigterm_finishes_in_flight_and_exits_0(slow):
    body = {"model": "random:distilgpt2", "prompt": [464, 3290], "max_tokens": 24, "ignore_eos": True}
    results = [{"started": threading.Event()} for _ in range(2)]
    threads = [threading.Thread(target=_drain, args=(slow.url, body, res)) for res in results]
    for t in threads:
        t.start()
    assert all(res["started"].wait(30) for res in results) and not any("error" in r for r in results), results
    slow.proc.send_signal(15)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):                 # no new connections
        http.client.HTTPConnection("127.0.0.1", slow.port, timeout=5).connect()
    assert slow.proc.poll() is None                             # still finishing the in-flight ones
    for t in threads:
        t.join(60)
    for res in results:
        assert "error" not in res, res
        assert res["events"][-1] == "[DONE]"
        chunks = [json.loads(e)["choices"][0] for e in res["events"][:-1]]
        assert len(sum((ch["token_ids"] for ch in chunks), [])) == 24 and chunks[-1]["finish_reason"] == "length"
    assert slow.proc.wait(30) == 0, slow.output
