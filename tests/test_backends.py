"""Generation engines through one harness, for every backend that builds them (eager, inductor, aoti):
compile, save, load in a fresh process with empty compiler caches, count what that process compiled
(nothing), generate == Hugging Face greedy token for token, and verify prefill and decode to the last
cache position. Plan: --seq 1:64 --batch 1:3 (compiled graphs: batch 2..3 and length 2..64, so batch
1 and length 1 are padded).

Also here: the bad inputs of generation engine directories (another torch, a plan that does not
match the artifact, an artifact edited with its checksum) and the AOTInductor loader crash probe.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynashape import api
from dynashape.backends import CompileSettings
from dynashape.engine import Engine
from dynashape.errors import BackendError, EngineError

from conftest import assert_widened_plan_is_refused, copy_engine, one_line, rehash

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A fresh interpreter: count every compile (Dynamo frames, Inductor graphs, C++ builds), load the
# engine, generate, compare with Hugging Face greedy, verify; print JSON.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from torch._dynamo.utils import counters
import torch._inductor.compile_fx as cfx, torch._inductor.cpp_builder as cb, torch._inductor.cpu_vec_isa as isa
compiles = {"inductor": 0, "cpp": 0}
def counting(kind, fn, counts=lambda *a: True):
    def wrapped(*a, **k):
        compiles[kind] += counts(*a)
        return fn(*a, **k)
    return wrapped
cfx.compile_fx_inner = counting("inductor", cfx.compile_fx_inner)
# Not the model: Inductor preprocesses its own C++ header (to hash it) before it looks up compiled
# kernels, and probes the CPU's vector instructions with tiny programs once per cache folder
probing = []
def probe(fn):
    def wrapped(*a, **k):
        probing.append(1)
        try:
            return fn(*a, **k)
        finally:
            probing.pop()
    return wrapped
isa.VecISA.check_build = probe(isa.VecISA.check_build)
cb.CppBuilder.build = counting("cpp", cb.CppBuilder.build, lambda b: not (b._preprocessing or probing))
import dynashape
from dynashape.verification import VerifySettings, verify_engine
engine = dynashape.load(sys.argv[1])
load_s = time.perf_counter() - t0
prompts = json.loads(sys.argv[2])
ours = engine.generate(prompts, 12, ignore_eos=True)
ref = engine.reference_model()
hf = []
for p in prompts:
    ids = torch.tensor([p])
    out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                       do_sample=False, eos_token_id=None, pad_token_id=0)
    hf.append(out[0, len(p):].tolist())
report = verify_engine(engine, VerifySettings(lengths=[1, 2, 33, 64], batches=[1, 3], decode_steps=8, greedy_tokens=6))
print(json.dumps({"backend": engine.backend, "ours": ours, "hf": hf, "verify": report.to_json(), "load_s": load_s,
                  "compiles": compiles, "dynamo_frames": counters["frames"]["total"]}))
"""


def run_child(directory: Path, prompts, tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=SRC, HF_HUB_OFFLINE="1", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
               TRITON_CACHE_DIR=str(tmp_path / "triton"))   # empty caches: nothing to reuse but the engine
    proc = subprocess.run([sys.executable, "-c", CHILD, str(directory), json.dumps(prompts)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    """built(backend) -> a saved random:tiny engine directory (each backend compiled once per module)."""
    cache: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in cache:
            out = tmp_path_factory.mktemp(f"engine-{backend}") / "engine"
            api.compile("random:tiny", seq="1:64", batch="1:3", backend=backend, out=out, loaded=tiny)
            cache[backend] = out
        return cache[backend]

    return get


def check_child(result: dict, backend: str) -> None:
    assert result["backend"] == backend
    assert result["ours"] == result["hf"], "greedy tokens differ from Hugging Face generate"
    assert result["compiles"] == {"inductor": 0, "cpp": 0} and result["dynamo_frames"] == 0, result["compiles"]
    v = result["verify"]
    assert v["ok"], [r for c in ("prefill", "decode", "greedy") for r in v[c]["results"] if not r["ok"]][:2]
    assert v["decode"]["points"] >= 8 and max(r["seq"] for r in v["decode"]["results"]) == 63   # the last position


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow),
                                     pytest.param("aoti", marks=pytest.mark.slow)])
def test_build_reload_in_a_fresh_process_without_compiling_tiny(backend, built, tmp_path):
    result = run_child(built(backend), [[5, 6, 7], [9], list(range(1, 40))], tmp_path)
    check_child(result, backend)
    engine_json = json.loads((built(backend) / "engine.json").read_text())
    files = {"eager": set(), "inductor": {"prefill_graph", "decode_graph", "inductor_cache"},
             "aoti": {"prefill_package", "decode_package", "aoti_meta"}}[backend]
    assert set(engine_json["artifacts"]) == {"weights", "model_config"} | files


@pytest.mark.slow
def test_the_compile_counter_sees_an_engine_without_its_compiled_code(built, tmp_path):
    """Without the inductor cache it carries, a fresh process must compile the kernels again: the
    counter of the harness above sees it, so its zeros mean something."""
    directory = copy_engine(built("inductor"), tmp_path)
    shutil.rmtree(directory / "inductor_cache")
    meta = json.loads((directory / "engine.json").read_text())
    del meta["artifacts"]["inductor_cache"]
    (directory / "engine.json").write_text(json.dumps(meta))
    result = run_child(directory, [[5, 6, 7]], tmp_path)
    assert result["ours"] == result["hf"] and result["compiles"]["cpp"] > 0


@pytest.mark.parametrize("backend", [
    "eager", pytest.param("inductor", marks=pytest.mark.slow), pytest.param("aoti", marks=pytest.mark.slow)])
def test_build_reload_in_a_fresh_process_without_compiling_gpt2(backend, tmp_path):
    """GPT-2's real widths and vocabulary (random weights; 50257 tokens padded to 50304, 38 MB of
    embeddings in every artifact), two of its twelve layers: the layers are alike, and each one more
    costs the CPU compilers 3-6 s (on 2 cores, 12 layers: 122 s for aoti, 77 for inductor; 2: 65, 44)."""
    from dynashape.models.load import LoadedModel, model_from_config, preset_config

    cfg = preset_config("gpt2")
    cfg.n_layer = 2
    model = model_from_config(cfg).eval()
    lm = LoadedModel("random:gpt2", "random", model, model.config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    out = tmp_path / "gpt2"
    api.compile("random:gpt2", seq="1:64", batch="1:3", backend=backend, out=out, loaded=lm)
    result = run_child(out, [[464, 3290, 318], list(range(100, 140))], tmp_path)
    check_child(result, backend)


# ---- bad inputs -------------------------------------------------------------------------------

def test_aoti_packages_from_another_torch_are_refused(built, tmp_path):
    directory = copy_engine(built("aoti"), tmp_path)
    side = json.loads((directory / "aoti.json").read_text())
    (directory / "aoti.json").write_text(json.dumps(dict(side, torch="2.4.0")))
    rehash(directory)
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    assert "built with torch 2.4.0" in one_line(err)


def test_a_plan_that_does_not_match_the_artifact_is_refused(built, tmp_path):
    directory = copy_engine(built("aoti"), tmp_path)
    assert_widened_plan_is_refused(directory, "aoti")


def test_an_edited_compiled_function_is_refused_with_the_rebuild_command(built, tmp_path):
    directory = copy_engine(built("inductor"), tmp_path)
    (directory / "decode.aot").write_bytes(b"not a compiled function")
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    assert "does not match its checksum" in one_line(err)
    rehash(directory)                                          # edited with its checksum updated
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    text = one_line(err)
    assert "decode.aot could not be loaded" in text and "--backend inductor" in text


def test_aoti_loader_crash_becomes_backend_error(built, tmp_path, monkeypatch):
    """torch 2.11's AOTInductor loader segfaulted on the GPU machine: the build probes the packages in a
    child process, so a crash there is one line, not a dead process."""
    from dynashape.backends import aoti
    from dynashape.planning.shapes import ShapePlan

    directory = built("aoti")
    plan = ShapePlan.from_json(json.loads((directory / "plan.json").read_text()))
    packages = {name: directory / f"{name}.pt2" for name in ("prefill", "decode")}
    aoti.probe_packages(packages, plan, CompileSettings(backend="aoti"), tmp_path)   # loads and runs: no error
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nif os.environ.get('DYNASHAPE_TEST_CRASH') and sys.argv[0] == '-c':\n"
        "    import faulthandler; faulthandler._sigsegv()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), SRC]))
    monkeypatch.setenv("DYNASHAPE_TEST_CRASH", "1")
    with pytest.raises(BackendError) as err:
        aoti.probe_packages(packages, plan, CompileSettings(backend="aoti"), tmp_path)
    text = one_line(err)
    assert "loading them crashed (SIGSEGV)" in text and "sitecustomize.py" in text and "--backend eager" in text


def test_inductor_without_precompile_support_is_a_backend_error(monkeypatch, tiny):
    from dynashape.backends import inductor

    monkeypatch.delattr(torch.compiler, "load_compiled_function")
    with pytest.raises(BackendError) as err:
        api.compile("random:tiny", seq="1:8", backend="inductor", loaded=tiny)
    assert "ahead-of-time precompile" in one_line(err) and inductor.NAME == "inductor"
