"""Traffic-driven planning: the request log, the padding of a plan against traffic, the proposal
(batch sizes by dynamic programming, checked against brute force), doctor --workload, and the CLI's
serve refusals (one line, non-zero exit, nothing started)."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from dynashape import api, cli
from dynashape.serve.workload import RequestLog, best_sizes, plan_for_workload, propose, read_traffic, waste


def run_main(capsys, *args):
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc, out, err, *needles):
    assert rc != 0 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], err
    for n in needles:
        assert n in lines[0], lines[0]


def write_traffic(path, n=400, seed=0, inflight=True):
    rng = random.Random(seed)
    t = 1767225600.0
    with open(path, "w") as f:
        for _ in range(n):
            t += rng.expovariate(20)
            row = {"t": round(t, 3), "prompt_len": rng.randint(8, 200), "max_tokens": rng.choice([32, 64]), "ok": True}
            if inflight:
                row["inflight"] = max(1, min(40, int(rng.gauss(20, 6))))
            f.write(json.dumps(row) + "\n")
    return path


def brute_sizes(rows, top, k):
    cands = sorted(set(rows) | {top})
    best = None
    for r in range(1, k + 1):
        for combo in itertools.combinations([c for c in cands if c != top], r - 1):
            sizes = sorted(combo) + [top]
            cost = sum(min(s for s in sizes if s >= n) - n for n in rows)
            best = min(best or (cost, sizes), (cost, sizes), key=lambda x: x[0])
    return best[0]


@pytest.mark.parametrize("seed", range(6))
def test_best_sizes_is_optimal(seed):
    rng = random.Random(seed)
    rows = [rng.randint(1, 24) for _ in range(rng.randint(5, 60))]
    top, k = 24, rng.randint(1, 4)
    sizes = best_sizes(rows, top, k)
    assert top in sizes and len(sizes) <= k and sizes == sorted(set(sizes))
    assert sum(min(s for s in sizes if s >= n) - n for n in rows) == brute_sizes(rows, top, k)


def test_request_log_lines(tmp_path):
    log = RequestLog(str(tmp_path / "t.jsonl"))
    log.log([(5, 16), (7, 16)], inflight=3, ok=True)
    log.log([(90, 8)], inflight=3, ok=False)
    log.close()
    log.log([(1, 1)], inflight=1, ok=True)              # after close: dropped, no error
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(r["prompt_len"], r["max_tokens"], r["inflight"], r["ok"]) for r in rows] == [
        (5, 16, 3, True), (7, 16, 3, True), (90, 8, 3, False)]
    traffic = read_traffic(str(tmp_path / "t.jsonl"), 0.001)
    assert traffic.positions == [21, 23, 98] and traffic.inflight_logged


def test_waste_and_proposal_on_cuda_plan(tmp_path):
    traffic = read_traffic(str(write_traffic(tmp_path / "t.jsonl")), 0.001)
    flags = propose(traffic, 1024, cuda=True)
    assert flags["seq"] == "1:272" and flags["batch"] == f"1:{max(traffic.inflight)}"
    assert flags["prefill_bucket"] == 16                 # 8..200 in 13 buckets of 16; 8 would make 25
    today = api.plan("random:gpt2", seq="1:1024", batch="1:64", device="cuda", dtype="float16", backend="eager")
    proposed = api.plan("random:gpt2", device="cuda", dtype="float16", backend="eager", **flags)
    a, b = waste(today, traffic), waste(proposed, traffic)
    assert b["prefill_padding"] < a["prefill_padding"] and b["decode_padding"] < a["decode_padding"]
    assert a["refused"] == b["refused"] == 0 and b["waited"] == 0 and b["cache_use"] > a["cache_use"]
    assert len(proposed.runtime.cuda_graph_batches) <= len(today.runtime.cuda_graph_batches)
    small = api.plan("random:gpt2", seq="1:128", batch="1:8", device="cuda", dtype="float16", backend="eager")
    w = waste(small, traffic)
    assert w["refused"] > 0.3 and w["waited"] > 0.9      # prompts up to 200 + 64 do not fit 128 positions


def test_estimated_inflight_when_not_logged(tmp_path):
    traffic = read_traffic(str(write_traffic(tmp_path / "t.jsonl", inflight=False)), 0.02)
    assert not traffic.inflight_logged and max(traffic.inflight) > 1
    # 20 requests/s, each 32..64 tokens at 20 ms: about 20 x 1 s in flight on average
    assert 10 < sorted(traffic.inflight)[len(traffic.inflight) // 2] < 40


def test_doctor_workload_cli(tmp_path, capsys):
    path = write_traffic(tmp_path / "t.jsonl")
    rc, out, err = run_main(capsys, "doctor", "random:gpt2", "--workload", path, "--device", "cuda",
                            "--batch", "1:64", "--dtype", "float16")
    assert rc == 0, err
    assert "today" in out and "proposed" in out and "decode padding" in out and "CUDA-graph batch sizes" in out
    assert "compile   dynashape compile random:gpt2 --seq 1:272" in out and "--graph-batches" in out
    rc, out, err = run_main(capsys, "doctor", "random:tiny", "--workload", path, "--json")
    rep = json.loads(out)
    assert rc == 0 and rep["today"]["seq"] == "1:256" and rep["proposed"]["seq"] == "1:256"   # tiny: 256 positions
    assert rep["today"]["refused"] > 0 and rep["proposed"]["refused"] == rep["today"]["refused"]
    assert rep["workload"]["requests"] == 400


@pytest.mark.parametrize("content,needle", [(None, "cannot be read"), ("", "holds no requests"),
                                            ('{"prompt_len": 3}\n', "line 1 is not a request record"),
                                            ('{"prompt_len": 0, "max_tokens": 3}\n', "line 1")])
def test_doctor_workload_bad_files(tmp_path, capsys, content, needle):
    path = tmp_path / "t.jsonl"
    if content is not None:
        path.write_text(content)
    assert_user_error(*run_main(capsys, "doctor", "random:tiny", "--workload", path), needle)


def test_doctor_without_seq_or_workload(capsys):
    assert_user_error(*run_main(capsys, "doctor", "random:tiny"), "--seq")


def test_plan_for_workload_keeps_today_flags(tmp_path):
    rep = plan_for_workload("random:gpt2", str(write_traffic(tmp_path / "t.jsonl")), seq="1:512", batch="1:8")
    assert rep["today"]["seq"] == "1:512" and rep["today"]["batch"] == "1:8" and rep["today"]["waited"] > 0.5


@pytest.mark.parametrize("args,needle", [
    (["random:tiny", "--replicas", "2"], "needs --ray"),
    (["random:tiny", "--port", "70000"], "--port 70000"),
    (["random:tiny", "--max-queue", "-1"], "--max-queue"),
    (["random:tiny", "--replicas", "0", "--ray"], "--replicas 0"),
    (["random:tiny", "--log-requests", "/nonexistent-dir/x.jsonl"], "--log-requests"),
    (["EMPTY_DIR"], "has no engine.json"),
    (["nowhere/engine-dir"], "could not read the config"),
    (["random:tiny", "--seq", "1:2048"], "n_positions"),
    (["random:tiny", "--backend", "onnx"], "--backend eager, inductor or aoti"),
    (["EMPTY_DIR", "--seq", "1:64"], "--seq is for a model"),            # an engine keeps its own plan
    (["EMPTY_DIR", "--batch", "1:4"], "--batch is for a model"),
    (["EMPTY_DIR", "--backend", "inductor"], "--backend is for a model"),
])
def test_serve_cli_refusals(capsys, tmp_path, args, needle):
    if args[0] == "EMPTY_DIR":
        args = [str(tmp_path), *args[1:]]
    assert_user_error(*run_main(capsys, "serve", *args), needle)
