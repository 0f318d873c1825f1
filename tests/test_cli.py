"""The CLI as a user drives it.

The end-to-end flow runs ``python -m dynashape`` in a subprocess (marked integration); the many quick
bad-input cases call ``dynashape.cli.main([...])`` in-process. Every bad input must end in exactly one
stderr line ``error: ... Fix: ...``, a non-zero exit, no traceback, and no partial files.
One eager engine (random:tiny, --seq 1:64 --batch 1:3) is compiled once and shared.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynashape import cli

SRC = Path(__file__).resolve().parents[1] / "src"
ENGINE_ARGS = ["--seq", "1:64", "--batch", "1:3", "--backend", "eager"]


# ---- helpers ---------------------------------------------------------------------------------------

def run_sub(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m dynashape ARGS`` as a user runs it (offline, from cwd)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1")
    env.pop("DYNASHAPE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dynashape", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """``dynashape ARGS`` in-process: (exit code, stdout, stderr)."""
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, out: str, err: str, *needles: str) -> str:
    """Non-zero exit, exactly one stderr line 'error: ... Fix: ...', no traceback; returns the line."""
    assert rc != 0, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    line = lines[0]
    assert line.startswith("error:") and "Fix:" in line, line
    assert "Traceback" not in out + err
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def assert_no_leftovers(target: Path) -> None:
    """No temp or moved-aside sibling of target remains."""
    stray = [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    assert stray == [], stray


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One eager engine, compiled through the real command line: (completed process, engine dir)."""
    work = tmp_path_factory.mktemp("cli")
    proc = run_sub(["compile", "random:tiny", *ENGINE_ARGS, "-o", "eng"], cwd=work)
    return proc, work / "eng"


@pytest.fixture
def engine_dir(compiled) -> Path:
    proc, path = compiled
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture
def engine_copy(engine_dir, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(engine_dir, dst)
    return dst


# ---- the happy path, end to end (subprocess) --------------------------------------------------------

@pytest.mark.integration
def test_doctor_prints_findings_and_plan(tmp_path):
    p = run_sub(["doctor", "random:tiny", "--seq", "1:256", "--batch", "1:4"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "ADJUSTED" in p.stdout and "OK" in p.stdout and "REFUSED" not in p.stdout
    assert "plan" in p.stdout and "serves 1..256" in p.stdout and "padded 1->2" in p.stdout
    assert "serves --seq 1:256 --batch 1:4" in p.stdout
    assert "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []  # doctor writes nothing


@pytest.mark.integration
def test_doctor_json(tmp_path):
    p = run_sub(["doctor", "random:tiny", "--seq", "1:256", "--batch", "1:4", "--json"], tmp_path)
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["use_cache"] is False
    assert plan["serve"]["seq"] == {"min": 1, "max": 256, "opt": None}
    assert plan["serve"]["batch"]["min"] == 1 and plan["serve"]["batch"]["max"] == 4
    assert plan["graph"]["seq"]["min"] == 2 and plan["graph"]["seq"]["max"] == 256
    assert plan["pad_to"]["seq"] == {"1": 2} and plan["pad_to"]["batch"] == {"1": 2}
    assert all(v >= 2 for v in plan["examples"].values())
    assert plan["examples"]["seq"] in range(2, 257) and plan["examples"]["batch"] in range(2, 5)
    names = {i["name"]: i["dims"] for i in plan["inputs"]}
    assert names["input_ids"] == ["batch", "seq"] == names["attention_mask"]


@pytest.mark.integration
def test_compile_writes_engine_dir(compiled):
    proc, path = compiled
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert {"engine.json", "plan.json", "weights.safetensors", "model.json"} <= {p.name for p in path.iterdir()}
    meta = json.loads((path / "engine.json").read_text())
    assert meta["backend"] == "eager" and meta["compile_args"]["seq"] == "1:64"
    assert "serves    --seq 1:64 --batch 1:3" in proc.stdout and "without compiling" in proc.stdout
    assert "  load random:tiny ..." in proc.stdout                # each step says what it took
    assert_no_leftovers(path)


@pytest.mark.integration
def test_verify_every_line_ok(engine_dir):
    p = run_sub(["verify", str(engine_dir)], engine_dir.parent)
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines() if ln.strip().startswith(("prefill", "decode", "greedy"))]
    assert len(rows) >= 30
    assert all(ln.rstrip().endswith(" ok") for ln in rows), p.stdout
    assert any("seq       64" in ln for ln in rows) and any("seq        1" in ln for ln in rows)
    assert any(ln.strip().startswith("decode") and "pos       63" in ln for ln in rows)   # the last position
    assert "result    greedy: 3/3 ok" in p.stdout


@pytest.mark.integration
def test_generate_from_engine(engine_dir):
    p = run_sub(["generate", str(engine_dir), "--prompt-ids", "5,6,7", "--max-new-tokens", "5", "--ignore-eos"],
                engine_dir.parent)
    assert p.returncode == 0, p.stderr
    ids = [int(x) for x in p.stdout.strip().split(",")]
    assert len(ids) == 5 and all(0 <= i < 1000 for i in ids)
    s = run_sub(["generate", str(engine_dir), "--prompt-ids", "5,6,7", "--max-new-tokens", "5", "--ignore-eos",
                 "--stream"], engine_dir.parent)
    assert s.returncode == 0, s.stderr
    assert s.stdout.strip() == p.stdout.strip()  # streamed greedy tokens are the same tokens


@pytest.mark.integration
def test_hub_id_offline_fails_fast(tmp_path):
    for cmd in (["doctor", "nobody-xyz/not-a-model", "--seq", "1:8"],
                ["generate", "nobody-xyz/not-a-model", "--prompt-ids", "1"]):
        p = run_sub(cmd, tmp_path)
        assert_user_error(p.returncode, p.stdout, p.stderr, "nobody-xyz/not-a-model", "random:gpt2")
    assert list(tmp_path.iterdir()) == []


# ---- the happy path, in-process ----------------------------------------------------------------------

@pytest.mark.integration
def test_doctor_try_exports(capsys):
    rc, out, err = run_main(capsys, "doctor", "random:tiny", "--seq", "1:256", "--batch", "1:4", "--try")
    assert rc == 0, err
    assert "export    OK" in out and "prefill and decode exported with batch 2..4, seq 2..256" in out
    rc, out, err = run_main(capsys, "doctor", "random:tiny", "--seq", "1:64", "--backend", "onnx", "--try")
    assert rc == 0 and "graph ranges batch 1 (static), seq 2..64" in out, err


@pytest.mark.integration
def test_verify_json(capsys, engine_dir):
    rc, out, err = run_main(capsys, "verify", engine_dir, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["ok"] is True and report["backend"] == "eager"
    for check in ("prefill", "decode", "greedy"):
        assert report[check]["ok"] and all(r["ok"] for r in report[check]["results"]) and report[check]["points"]


@pytest.mark.integration
def test_verify_chosen_lengths(capsys, engine_dir):
    rc, out, err = run_main(capsys, "verify", engine_dir, "--lengths", "1,2,64", "--batches", "1,3", "--json")
    assert rc == 0, err
    points = {(r["batch"], r["seq"]) for r in json.loads(out)["prefill"]["results"]}
    assert {(1, 1), (1, 2), (1, 64), (3, 8)} <= points


def test_generate_json_and_batch(capsys, engine_dir):
    rc, out, err = run_main(capsys, "generate", engine_dir, "--prompt-ids", "5,6,7", "--prompt-ids", "9",
                            "--max-new-tokens", "5", "--ignore-eos", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert [r["prompt_ids"] for r in res["outputs"]] == [[5, 6, 7], [9]]
    assert [len(r["new_ids"]) for r in res["outputs"]] == [5, 5] and res["new_tokens"] == 10
    # the batched row 0 equals the single-prompt run (right padding never leaks into a row)
    rc, out1, _ = run_main(capsys, "generate", engine_dir, "--prompt-ids", "5,6,7", "--max-new-tokens", "5",
                           "--ignore-eos")
    assert rc == 0 and [int(x) for x in out1.strip().split(",")] == res["outputs"][0]["new_ids"]


def test_generate_model_nocache_matches_hf(capsys):
    rc, out, err = run_main(capsys, "generate", "random:tiny", "--runtime", "nocache", "--prompt-ids", "1,2",
                            "--max-new-tokens", "3")
    assert rc == 0, err
    ids = [int(x) for x in out.strip().split(",")]
    from dynashape.models import load_model

    model = load_model("random:tiny").model
    with torch.no_grad():
        want = model.generate(torch.tensor([[1, 2]]), max_new_tokens=3, do_sample=False,
                              pad_token_id=999)[0, 2:].tolist()
    assert ids == want


# ---- bad input: models and ranges -------------------------------------------------------------------

@pytest.fixture
def bert_dir(tmp_path) -> Path:
    from transformers import BertConfig

    path = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
               vocab_size=100).save_pretrained(path)
    return path


@pytest.mark.parametrize("model,needle", [("random:nope", "random:tiny"), ("/x/y/z", "/x/y/z")])
def test_unknown_model(capsys, tmp_path, model, needle):
    out_dir = tmp_path / "e"
    for cmd in (["doctor", model, "--seq", "1:8"], ["compile", model, "--seq", "1:8", "-o", out_dir],
                ["generate", model, "--prompt-ids", "1"]):
        assert_user_error(*run_main(capsys, *cmd), needle)
    assert not out_dir.exists()
    assert_no_leftovers(out_dir)


def test_dir_without_config(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    assert_user_error(*run_main(capsys, "doctor", tmp_path / "m", "--seq", "1:8"), "config.json")
    assert_user_error(*run_main(capsys, "generate", tmp_path / "m" / "", "--runtime", "nocache",
                                "--prompt-ids", "1"))


def test_non_gpt2_dir(capsys, bert_dir, tmp_path):
    out_dir = tmp_path / "e"
    for cmd in (["doctor", bert_dir, "--seq", "1:8"], ["compile", bert_dir, "--seq", "1:8", "-o", out_dir],
                ["generate", bert_dir, "--runtime", "nocache", "--prompt-ids", "1"]):
        assert_user_error(*run_main(capsys, *cmd), "'bert'", "GPT-2")
    assert not out_dir.exists()
    assert_no_leftovers(out_dir)


@pytest.mark.parametrize("seq,needle", [("a:10", "'a'"), ("1:2:3:4", "MIN:MAX"), ("", "MIN:MAX"),
                                        ("5:2", "min > max"), ("0:10", "at least 1"), ("1:10:20", "OPT 20"),
                                        ("1.5:8", "whole number")])
def test_bad_range_syntax(capsys, tmp_path, seq, needle):
    assert_user_error(*run_main(capsys, "doctor", "random:tiny", "--seq", seq), needle)
    assert_user_error(*run_main(capsys, "doctor", "random:tiny", "--seq", "1:8", "--batch", seq), needle)
    out_dir = tmp_path / "e"
    assert_user_error(*run_main(capsys, "compile", "random:tiny", "--seq", seq, "-o", out_dir), needle)
    assert not out_dir.exists()


def test_range_beyond_model_limit(capsys, tmp_path):
    rc, out, err = run_main(capsys, "doctor", "random:gpt2", "--seq", "1:2048")
    assert rc == 1
    assert "REFUSED" in out  # the plan is still shown
    assert_user_error(rc, out, err, "n_positions 1024", "--seq 1:1024")
    out_dir = tmp_path / "e"
    assert_user_error(*run_main(capsys, "compile", "random:gpt2", "--seq", "1:2048", "-o", out_dir),
                      "n_positions 1024", "--seq 1:1024")
    assert not out_dir.exists()
    assert_no_leftovers(out_dir)


def test_doctor_json_refused_still_valid_json(capsys):
    rc, out, err = run_main(capsys, "doctor", "random:gpt2", "--seq", "1:2048", "--json")
    assert rc == 1
    assert any(f["status"] == "REFUSED" for f in json.loads(out)["findings"])
    assert_user_error(rc, out, err, "n_positions 1024")


@pytest.mark.parametrize("flags,needle", [(["--dtype", "int8"], "int8"), (["--attn", "flash"], "flash"),
                                          (["--frobnicate"], "--help")])
def test_bad_plan_flags(capsys, flags, needle):
    assert_user_error(*run_main(capsys, "doctor", "random:tiny", "--seq", "1:8", *flags), needle)


# ---- bad input: engine directories ----------------------------------------------------------------

def test_missing_engine_dir(capsys, tmp_path):
    for cmd in ("verify", "generate"):
        extra = ["--prompt-ids", "1"] if cmd == "generate" else []
        assert_user_error(*run_main(capsys, cmd, tmp_path / "nope", *extra), "does not exist")
    assert list(tmp_path.iterdir()) == []


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


CORRUPTIONS = {
    "garbage engine.json": (lambda d: (d / "engine.json").write_text("{not json"), "engine.json is corrupt"),
    "engine.json not an object": (lambda d: (d / "engine.json").write_text("[1, 2]"), "engine.json is corrupt"),
    "missing weights": (lambda d: (d / "weights.safetensors").unlink(), "missing its weights"),
    "truncated weights": (lambda d: os.truncate(d / "weights.safetensors", 1000), "checksum"),
    "other format": (lambda d: _edit_json(d / "engine.json", format=99), "format 99"),
    "other version": (lambda d: _edit_json(d / "engine.json", dynashape="7.0.0"), "7.0.0"),
    "unknown backend": (lambda d: _edit_json(d / "engine.json", backend="warp"), "warp"),
    "missing plan.json": (lambda d: (d / "plan.json").unlink(), "plan.json"),
    "garbage plan.json": (lambda d: (d / "plan.json").write_text("[1,"), "corrupt"),
    "plan.json of another format": (lambda d: _edit_json(d / "plan.json", format=5), "plan format 5"),
    "unchecked bad weights": (lambda d: (_edit_json(d / "engine.json", artifacts={}),
                                         (d / "weights.safetensors").write_bytes(b"xx")), "corrupt"),
    "engine of the previous format": (lambda d: _edit_json(d / "engine.json", format=1), "older dynashape"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_engine_dir(capsys, engine_copy, kind):
    corrupt, needle = CORRUPTIONS[kind]
    corrupt(engine_copy)
    assert_user_error(*run_main(capsys, "verify", engine_copy), needle)
    assert_user_error(*run_main(capsys, "generate", engine_copy, "--prompt-ids", "1"), needle)


@pytest.mark.integration
def test_corrupt_program_no_traceback_logged(engine_copy):
    """torch logs a traceback before raising on a bad archive; a user must see one line only."""
    CORRUPTIONS["unchecked bad weights"][0](engine_copy)
    p = run_sub(["verify", str(engine_copy)], engine_copy.parent)
    assert_user_error(p.returncode, p.stdout, p.stderr, "corrupt", f"-o {engine_copy} --force")


def test_plain_dir_is_not_an_engine(capsys, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    assert_user_error(*run_main(capsys, "verify", tmp_path / "plain"), "not a dynashape engine")
    assert_user_error(*run_main(capsys, "generate", tmp_path / "plain", "--prompt-ids", "1"), "engine.json")
    assert (tmp_path / "plain" / "notes.txt").read_text() == "hi"


# ---- bad input: compile targets -----------------------------------------------------------------------

def test_compile_refuses_existing_dir_without_force(capsys, tmp_path, engine_copy):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    for target in (plain, engine_copy):
        before = snapshot(target)
        assert_user_error(*run_main(capsys, "compile", "random:tiny", *ENGINE_ARGS, "-o", target), "--force")
        assert snapshot(target) == before
        assert_no_leftovers(target)


def test_force_refuses_non_engine_dir(capsys, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    assert_user_error(*run_main(capsys, "compile", "random:tiny", *ENGINE_ARGS, "-o", plain, "--force"),
                      "not a dynashape engine")
    assert snapshot(plain) == {"keep.txt": hashlib.sha256(b"mine").hexdigest()}
    assert_no_leftovers(plain)


def test_unknown_backend_writes_nothing(capsys, tmp_path):
    out_dir = tmp_path / "e"
    assert_user_error(*run_main(capsys, "compile", "random:tiny", "--seq", "1:8", "--backend", "warp",
                                "-o", out_dir), "warp", "eager")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu(capsys, tmp_path, engine_dir):
    out_dir = tmp_path / "e"
    assert_user_error(*run_main(capsys, "compile", "random:tiny", *ENGINE_ARGS, "--device", "cuda",
                                "-o", out_dir), "GPU", "--device cpu")
    assert list(tmp_path.iterdir()) == []
    assert_user_error(*run_main(capsys, "generate", "random:tiny", "--device", "cuda", "--prompt-ids", "1"),
                      "GPU", "--device cpu")
    assert_user_error(*run_main(capsys, "generate", engine_dir, "--device", "cuda", "--prompt-ids", "1"),
                      "GPU", "--device cpu")


def _failing_save(exc: BaseException):
    def save(runner, directory):
        (Path(directory) / "half-written.bin").write_bytes(b"\0" * 1000)
        raise exc
    return save


@pytest.mark.parametrize("exc,code", [(OSError("No space left on device"), 3), (KeyboardInterrupt(), 130)])
def test_failed_compile_leaves_nothing_and_keeps_good_engine(capsys, monkeypatch, tmp_path, engine_copy, exc, code):
    import dynashape.backends.eager as eager

    monkeypatch.setattr(eager, "save", _failing_save(exc))
    before = snapshot(engine_copy)
    rc, out, err = run_main(capsys, "compile", "random:tiny", *ENGINE_ARGS, "-o", engine_copy, "--force")
    assert rc == code
    assert_user_error(rc, out, err)
    assert snapshot(engine_copy) == before  # the good engine is byte-identical
    assert_no_leftovers(engine_copy)
    fresh = tmp_path / "fresh"
    rc, out, err = run_main(capsys, "compile", "random:tiny", *ENGINE_ARGS, "-o", fresh)
    assert_user_error(rc, out, err)
    assert not fresh.exists()
    assert_no_leftovers(fresh)


# ---- bad input: generate and verify -----------------------------------------------------------------

@pytest.mark.parametrize("flags,needle", [
    (["--prompt-ids", "5,6,1000"], "1000"),
    (["--prompt-ids=-1,5"], "-1"),
    (["--prompt-ids", "1,x"], "'x'"),
    (["--prompt-ids", ","], "empty"),
    ([], "no prompt"),
    (["--prompt", "hello"], "tokenizer"),
    (["--prompt", "hello", "--prompt-ids", "1"], "one of them"),
    (["--prompt-ids", "1,2", "--max-new-tokens", "63"], "65"),
    (["--prompt-ids", "1", "--max-new-tokens", "0"], "max-new-tokens"),
    (["--prompt-ids", "1", "--prompt-ids", "2", "--prompt-ids", "3", "--prompt-ids", "4"], "batch max 3"),
    (["--prompt-ids", "1", "--temperature", "-1"], "temperature"),
    (["--prompt-ids", "1", "--top-p", "0"], "top-p"),
    (["--prompt-ids", "1", "--dtype", "int8"], "int8"),
    (["--prompt-ids", "1", "--dtype", "float16"], "float32"),
])
def test_generate_bad_requests_on_engine(capsys, engine_dir, flags, needle):
    assert_user_error(*run_main(capsys, "generate", engine_dir, *flags), needle)


def test_generate_beyond_engine_range_names_rebuild(capsys, engine_dir):
    line = assert_user_error(*run_main(capsys, "generate", engine_dir, "--prompt-ids", "1,2",
                                       "--max-new-tokens", "63"), "65 positions is beyond this engine's 64")
    assert "--max-new-tokens 62 or less" in line and "--seq 1:65" in line and f"-o {engine_dir} --force" in line


@pytest.mark.parametrize("flags,needle", [
    (["--prompt-ids", "1000"], "1000"),
    (["--prompt-ids", ","], "empty"),
    ([], "no prompt"),
    (["--prompt", "hello"], "tokenizer"),
    (["--prompt-ids", "1", "--max-new-tokens", "300"], "256"),
    (["--prompt-ids", "1", "--dtype", "int8"], "int8"),
    (["--prompt-ids", "1", "--temperature", "-0.5"], "temperature"),
    (["--prompt-ids", "1", "--top-p", "0"], "top-p"),
    (["--prompt-ids", "1", "--runtime", "warp"], "--runtime"),
])
def test_generate_bad_requests_on_model(capsys, flags, needle):
    for runtime in ("nocache", "engine"):
        args = [*flags] if "--runtime" in flags else ["--runtime", runtime, *flags]
        assert_user_error(*run_main(capsys, "generate", "random:tiny", *args), needle)


@pytest.mark.parametrize("flags,needle", [
    (["--lengths", "65"], "65"), (["--lengths", "1,0"], "0"), (["--batches", "4"], "batch range 1..3"),
    (["--lengths", "a,b"], "whole numbers"), (["--lengths", ","], "empty"), (["--batches", "1.5"], "1.5"),
])
def test_verify_bad_sizes(capsys, engine_dir, flags, needle):
    rc, out, err = run_main(capsys, "verify", engine_dir, *flags)
    line = assert_user_error(rc, out, err, needle)
    if "65" in flags:
        assert "--seq 1:65" in line  # the rebuild command holds the asked size
    assert "max|err|" not in out  # refused before any comparison ran


def test_compile_json_says_how_it_was_made(capsys, tmp_path):
    """The JSON of `compile --json` is a result: it names the command that made it."""
    out_dir = tmp_path / "eng"
    rc, out, err = run_main(capsys, "compile", "random:tiny", *ENGINE_ARGS, "-o", out_dir, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["command"] == "dynashape compile random:tiny " + " ".join(ENGINE_ARGS) + f" -o {out_dir} --json"
    assert data["engine"] == str(out_dir) and data["reload_s"] > 0


@pytest.mark.parametrize("value", ["0", "-3"])
def test_steps_per_graph_below_one_is_refused(capsys, tmp_path, value):
    """Not clamped to 1 in silence: the planner refuses it with the flag to use."""
    out_dir = tmp_path / "e"
    assert_user_error(*run_main(capsys, "compile", "random:tiny", "--seq", "1:32", "--steps-per-graph", value,
                                "-o", out_dir), f"--steps-per-graph {value}", "--steps-per-graph 8")
    assert not out_dir.exists()
