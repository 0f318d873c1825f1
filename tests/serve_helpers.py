"""Helpers for the serve tests: engines, a server as a real process, an in-process server, HTTP bits.

Every server listens on 127.0.0.1 only, every wait has a timeout, and every process a test starts
is stopped by the test (SIGTERM, then SIGKILL of its own process group if it does not exit).
"""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import torch

HOST = "127.0.0.1"


# ---- engines ---------------------------------------------------------------------------------------

def byte_tokenizer(vocab: int = 1000):
    """A byte-level BPE tokenizer with ``vocab`` ids (EOS last), trained on made-up words: text in
    and out of a random:tiny model without downloading anything."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    corpus = [" ".join(rng.choice(words) for _ in range(30)) + " é ü 你好 ." for _ in range(300)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab - 1, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def perturbed_tiny(seed: int = 0, scale: float = 0.05):
    """random:tiny with its weights nudged, so greedy outputs vary with position and prompt (the plain
    random weights mostly repeat the last prompt token, which would hide a position or slot bug)."""
    from dynashape.models import load_model

    lm = load_model("random:tiny")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return lm


def build_engine(out, tokenizer: bool = True, seq: str = "1:64", batch: str = "1:4"):
    from dynashape import api

    lm = perturbed_tiny()
    lm.tokenizer = byte_tokenizer() if tokenizer else None
    return api.compile("random:tiny", seq=seq, batch=batch, backend="eager", loaded=lm, out=out)


def rand_prompts(lengths, vocab: int = 999, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


# ---- a server as a real process ----------------------------------------------------------------------

class ServerProcess:
    """``dynashape serve ... --port 0`` as a child process; ``url`` from its "listening on" line."""

    def __init__(self, *args: str, ready_timeout: float = 120.0, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "dynashape", "serve", *args, "--host", HOST, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.url = None
        self._listening = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            if not self._listening.wait(ready_timeout):
                raise RuntimeError("server did not start:\n" + self.output)
            from dynashape.serve.server import wait_healthy

            wait_healthy(self.url, ready_timeout)
        except BaseException:
            self.kill()
            raise

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("listening on "):
                self.url = line.split()[2]
                self._listening.set()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status (killing the process group if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)




# ---- an in-process server (for engines the test controls: faults, slow loads) ----------------------------

class InProcessServer:
    """uvicorn in a thread of the test process, on a free loopback port."""

    def __init__(self, app, timeout: float = 30.0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=0, lifespan="on", log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not (self.server.started and self.server.servers):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process server did not start")
            time.sleep(0.02)
        self.url = f"http://{HOST}:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


# ---- HTTP --------------------------------------------------------------------------------------------

def post(url: str, body, path: str = "/v1/completions", headers=None, timeout: float = 60.0):
    """(status, headers, parsed JSON body); ``body`` is bytes (sent as is) or an object (JSON)."""
    host, port = url.split("//")[1].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    c.request("POST", path, body=data, headers=headers if headers is not None else {"Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(raw) if raw else None


def open_stream(url: str, body: dict, timeout: float = 60.0):
    """Start a streaming completion; returns (connection, response) at the first byte of the body."""
    host, port = url.split("//")[1].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    assert r.getheader("content-type").startswith("text/event-stream")
    return c, r


def read_event(r) -> str:
    """The data of one SSE event (a "data: ..." line and a blank line)."""
    line = r.readline().decode()
    assert line.startswith("data: "), repr(line)
    assert r.readline() == b"\n"
    return line[len("data: "):].rstrip("\n")


def read_all_events(r) -> list[str]:
    events = [read_event(r)]
    while events[-1] != "[DONE]" and '"error"' not in events[-1]:
        events.append(read_event(r))
    return events


def metrics(url: str) -> dict:
    """/metrics parsed with prometheus_client's parser: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        out[("__type__", fam.name)] = fam.type
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def outcome(m: dict, name: str) -> float:
    return m.get(("dynashape_requests_total", (("outcome", name),)), 0.0)


def wait_until(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.05)
