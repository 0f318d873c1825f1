"""Engine directories: save/load in a fresh process, atomic writes, races, and every damaged engine."""
import json
import os
import subprocess
import sys

import pytest
import torch

from dynashape import api
from dynashape.engine import Engine
from dynashape.errors import BackendError, EngineError

pytestmark = pytest.mark.integration
SRC = os.path.abspath("src")


@pytest.fixture(scope="module")
def engine(tiny):
    return api.compile("random:tiny", seq="1:64", batch="1:4", backend="eager", loaded=tiny)


def _run(code: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)


def test_save_then_load_in_a_fresh_process_gives_the_same_tokens(engine, tmp_path):
    out = tmp_path / "eng"
    engine.save(out)
    prompts = [[5, 6, 7], [9], list(range(1, 30))]
    proc = _run("import sys, json, dynashape; e = dynashape.load(sys.argv[1]); "
                "print(json.dumps(e.generate(json.loads(sys.argv[2]), 12, ignore_eos=True)))", out, json.dumps(prompts))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == engine.generate(prompts, 12, ignore_eos=True)
    meta = json.loads((out / "engine.json").read_text())
    assert meta["backend"] == "eager" and set(meta["artifacts"]) == {"weights", "model_config"}
    assert (out / "weights.safetensors").stat().st_size < 2 * sum(p.numel() * 4 for p in engine.model.parameters())


def test_a_generation_engine_has_no_forward_graph(engine):
    with pytest.raises(EngineError, match="no forward graph") as e:
        engine(torch.tensor([[1, 2]]))
    assert "engine.generate" in e.value.fix


def test_save_refuses_existing_without_force_and_replaces_with_force(engine, tmp_path):
    out = tmp_path / "eng"
    engine.save(out)
    stamp = (out / "engine.json").read_text()
    with pytest.raises(EngineError, match="already exists"):
        engine.save(out)
    assert (out / "engine.json").read_text() == stamp
    engine.save(out, force=True)
    assert Engine.load(out).backend == "eager"
    assert [p.name for p in tmp_path.iterdir()] == ["eng"]   # no temp or old directories left


def test_force_never_replaces_a_directory_that_is_not_an_engine(engine, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EngineError, match="not a dynashape engine"):
        engine.save(tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_save_leaves_nothing_and_keeps_the_old_engine(engine, tmp_path, monkeypatch):
    out = tmp_path / "eng"
    engine.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import dynashape.backends.eager as eager_backend

    def broken_save(runners, directory):
        (directory / "half.bin").write_bytes(b"x" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(eager_backend, "save", broken_save)
    with pytest.raises(OSError):
        engine.save(out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["eng"]


def test_two_compiles_racing_into_one_directory_write_exactly_one_engine(tmp_path):
    out = tmp_path / "eng"
    cmd = [sys.executable, "-m", "dynashape", "compile", "random:tiny", "--seq", "1:32", "--backend", "eager",
           "-o", str(out)]
    env = dict(os.environ, PYTHONPATH=SRC)
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    loser = next(err for rc, err in results if rc)
    assert ("written by another build" in loser or "already exists" in loser) and loser.count("\n") == 1
    assert Engine.load(out).generate([[1, 2]], 3, ignore_eos=True)
    assert [p.name for p in tmp_path.iterdir()] == ["eng"]


@pytest.mark.parametrize("damage,fragment", [
    (lambda d: (d / "engine.json").write_text("{not json"), "engine.json is corrupt"),
    (lambda d: (d / "engine.json").unlink(), "no engine.json"),
    (lambda d: (d / "weights.safetensors").unlink(), "missing its weights artifact"),
    (lambda d: (d / "weights.safetensors").write_bytes((d / "weights.safetensors").read_bytes()[:1000]), "checksum"),
    (lambda d: _edit_meta(d, format=99), "engine format 99"),
    (lambda d: _edit_meta(d, format=1), "an older dynashape's engine, which generated without a KV cache"),
    (lambda d: _edit_meta(d, dynashape="9.9.0"), "built by dynashape 9.9.0"),
    (lambda d: _edit_meta(d, backend="tvm"), "unknown backend"),
    (lambda d: (d / "plan.json").unlink(), "missing plan.json"),
])
def test_damaged_engine_directories_are_refused_with_a_rebuild_hint(engine, tmp_path, damage, fragment):
    out = tmp_path / "eng"
    engine.save(out)
    damage(out)
    with pytest.raises((EngineError, BackendError)) as info:
        Engine.load(out)
    line = info.value.one_line()
    assert fragment in line and "Fix:" in line
    if "format" in fragment or "dynashape" in fragment:
        assert "dynashape compile random:tiny --seq 1:64 --batch 1:4 --backend eager --device cpu" in line


def _edit_meta(d, **changes):
    meta = json.loads((d / "engine.json").read_text())
    meta.update(changes)
    (d / "engine.json").write_text(json.dumps(meta))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_an_engine_built_for_cuda_is_refused_where_there_is_no_gpu(engine, tmp_path):
    out = tmp_path / "eng"
    engine.save(out)
    _edit_meta(out, device="cuda")
    with pytest.raises(EngineError, match="built for cuda, and this machine has no GPU") as e:
        Engine.load(out)
    assert "GPU machine" in e.value.fix


def test_an_engine_is_refused_on_another_device_type(engine, tmp_path):
    out = tmp_path / "eng"
    engine.save(out)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no GPU"):
            Engine.load(out, device="cuda")
        return
    with pytest.raises(EngineError, match="generation engine built for cpu") as e:
        Engine.load(out, device="cuda")
    assert "--device cuda" in e.value.fix


def test_missing_engine_directory_is_refused(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        Engine.load(tmp_path / "nope")


def test_reference_model_holds_the_engine_weights(tiny, engine):
    ids = torch.randint(0, 1000, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(engine.reference_model()(input_ids=ids).logits, tiny.model(input_ids=ids).logits,
                                   atol=0, rtol=0)


def test_loaded_weights_start_on_16_byte_boundaries(engine, tmp_path):
    """safetensors hands out views packed back to back (this file's second tensor starts 6 bytes in); a
    loaded engine's weights are 16-byte aligned like the build's, so Triton's kernels specialize alike."""
    from safetensors.torch import load_file, save_file

    from dynashape.engine.engine import aligned
    save_file({"a": torch.ones(3, dtype=torch.float16), "b": torch.arange(8, dtype=torch.float16)}, tmp_path / "t.st")
    b = load_file(tmp_path / "t.st")["b"]
    assert b.data_ptr() % 16 != 0                                # the packing this guards against
    c = aligned(b)
    assert c.data_ptr() % 16 == 0 and torch.equal(c, b) and aligned(c) is c
    engine.save(tmp_path / "eng")
    loaded = Engine.load(tmp_path / "eng")
    assert all(p.data_ptr() % 16 == 0 for p in loaded.model.parameters())
    assert loaded.generate([[5, 6, 7]], 6, ignore_eos=True) == engine.generate([[5, 6, 7]], 6, ignore_eos=True)


LOAD_AND_COUNT = r"""
import json, os, sys
from pathlib import Path
import dynashape
from dynashape.runtime.sampling import SamplingSettings
engine = dynashape.load(sys.argv[1])
for B in (1, 2, 3, 5):
    for L in (1, 9, 70, 150, 197):
        engine.generate([[(7 * i + b) % 500 for i in range(L)] for b in range(B)], 3, ignore_eos=True)
    engine.generate([[5, 6]] * B, 3, SamplingSettings(temperature=0.8, top_k=20), ignore_eos=True)
cache = Path(os.environ["TRITON_CACHE_DIR"])
print(json.dumps({p.name: sorted(f.name for f in p.iterdir()) for p in cache.iterdir()}))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_loaded_fused_engine_compiles_no_kernel_at_any_batch_or_prompt_length(tmp_path):
    """`dynashape compile` in one process; a fresh process with an empty Triton cache loads the engine and
    generates at every batch size and prompt-length class, greedy and sampled: every kernel it runs
    comes from the engine's triton/ folder, none is compiled at load (that took 10-20 s on an H100)."""
    out, env = tmp_path / "eng", dict(os.environ, PYTHONPATH=SRC, TRITON_CACHE_DIR=str(tmp_path / "build-cache"))
    subprocess.run([sys.executable, "-m", "dynashape", "compile", "random:tiny", "--seq", "1:200", "--batch", "1:5",
                    "--device", "cuda", "--dtype", "float16", "-o", str(out)], env=env, check=True, capture_output=True)
    carried = sorted(p.name for p in (out / "triton").iterdir())
    env["TRITON_CACHE_DIR"] = str(tmp_path / "load-cache")
    r = subprocess.run([sys.executable, "-c", LOAD_AND_COUNT, str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = json.loads(r.stdout.splitlines()[-1])                      # cache entry -> its files
    compiled_at_load = {name: files for name, files in entries.items() if name not in carried}
    assert carried and compiled_at_load == {}
