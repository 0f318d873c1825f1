"""dynashape serve in-process (uvicorn in a thread of the test): an engine whose generator fails on
demand (a 500 for the failing request only; the server and the other requests go on) and a slow
load (/health and completions answer 503 until the engine is ready)."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_helpers import InProcessServer, build_engine, metrics, outcome, post, wait_until  # noqa: E402

from dynashape import api  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "tiny"
    build_engine(out, tokenizer=False)
    return out


@pytest.fixture(scope="module")
def offline(engine_dir):
    return api.load(engine_dir)


def expected(offline, prompt, n):
    out = offline.generate([prompt], n)[0]
    return out[:out.index(999)] if 999 in out else out


class Faulty:
    """An engine whose generator fails on demand: admit for prompts starting with 13, step once."""

    def __init__(self, engine):
        self.plan, self.tokenizer, self.device = engine.plan, engine.tokenizer, engine.device
        self.generator = engine.generator
        gen, self.fail_step = self.generator, threading.Event()
        admit, step = gen.admit, gen.step

        def bad_admit(reqs):
            if any(r.prompt[0] == 13 for r in reqs):
                raise RuntimeError("injected admit fault")
            admit(reqs)

        def bad_step():
            if self.fail_step.is_set():
                self.fail_step.clear()
                raise RuntimeError("injected step fault")
            return step()

        gen.admit, gen.step = bad_admit, bad_step


def test_internal_error_is_500_and_others_go_on(engine_dir, offline):
    from dynashape.serve import ServeSettings, build_app

    faulty = Faulty(api.load(engine_dir))
    srv = InProcessServer(build_app(lambda: faulty, ServeSettings(model_name="tiny")))
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        good, bad = [5, 6, 7], [13, 6, 7]
        with cf.ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(client.completions.create, model="tiny", prompt=p, max_tokens=20, temperature=0)
                    for p in (good, bad, good, bad)]
            results = [f.exception(timeout=60) or f.result() for f in futs]
        for p, res in zip((good, bad, good, bad), results):
            if p == bad:
                assert isinstance(res, openai.InternalServerError) and "injected admit fault" in res.body["message"]
            else:
                assert res.choices[0].token_ids == expected(offline, good, 20)
        faulty.fail_step.set()
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model="tiny", prompt=good, max_tokens=20, temperature=0)
        assert client.completions.create(model="tiny", prompt=good, max_tokens=20, temperature=0
                                         ).choices[0].token_ids == expected(offline, good, 20)
        m = metrics(srv.url)
        assert outcome(m, "error") == 3 and outcome(m, "ok") == 3 and m[("dynashape_running_batch", ())] == 0
    finally:
        srv.stop()


def test_health_is_503_until_loaded(engine_dir):
    from dynashape.serve import build_app

    release = threading.Event()

    def slow_source():
        assert release.wait(30)
        return api.load(engine_dir)

    srv = InProcessServer(build_app(slow_source))
    try:
        status, headers, data = post(srv.url, {"model": "random:tiny", "prompt": [1], "max_tokens": 1})
        assert status == 503 and headers["retry-after"] == "1" and data["error"]["code"] == "loading"
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(srv.url + "/health", timeout=5)
        assert ei.value.code == 503
        release.set()
        wait_until(lambda: post(srv.url, {"model": "random:tiny", "prompt": [1], "max_tokens": 1})[0] == 200,
                   what="ready")
    finally:
        release.set()
        srv.stop()
