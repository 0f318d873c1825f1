"""Forward engines (onnx, tensorrt): a no-cache forward graph of the exported Hugging Face model.

One harness: compile, save, reload in a fresh process, compare with the Hugging Face eager model at
the plan's boundaries and padded sizes. Plan: random:tiny, --seq 1:64 --batch 1:3, so the graph is
batch 2..3, seq 2..64 (opt 16) and size 1 of either is padded by the Engine. Also here: every call
checked against the plan, the ONNX TensorRT profiles (onnxruntime run at each profile point of the
no-cache and the KV-cache decode graph, the decode graph against Hugging Face with a real cache), the
Torch-TensorRT contract with a stand-in module, generation through a forward engine (the no-cache
loop), and the bad inputs of a forward engine directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from dynashape.backends import CompileSettings, get_backend
from dynashape.backends import onnx as onnx_backend
from dynashape.backends import tensorrt as trt_backend
from dynashape.engine import Engine, build_engine
from dynashape.errors import BackendError, EngineError, GenerateError
from dynashape.graphs import dynamic_shapes, export_plan

from conftest import assert_widened_plan_is_refused, copy_engine, hf_logits, make_plan_for, one_line, rehash

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[1] / "src")
BATCHES, LENGTHS = (1, 2, 3), (1, 2, 3, 16, 63, 64)

# Runs in a fresh interpreter: load the engine, compare with the HF reference, print JSON.
CHILD = r"""
import json, sys, torch
from dynashape.engine import Engine
engine = Engine.load(sys.argv[1])
ref = engine.reference_model()
g = torch.Generator().manual_seed(1)
rows = []
for b in (1, 2, 3):
    for t in (1, 2, 3, 16, 63, 64):
        ids = torch.randint(0, 1000, (b, t), generator=g)
        with torch.no_grad():
            got, want = engine(ids), ref(input_ids=ids, use_cache=False).logits
        rows.append([b, t, list(got.shape), (got - want).abs().max().item(),
                     bool((got.argmax(-1) == want.argmax(-1)).all())])
print(json.dumps({"backend": engine.backend, "rows": rows}))
"""


@pytest.fixture(scope="module")
def plan(tiny):
    return make_plan_for(tiny, "1:64", "1:3", backend="onnx")


@pytest.fixture(scope="module")
def built(tiny, plan, tmp_path_factory):
    """built("onnx") -> a saved engine directory (compiled once per module)."""
    cache: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in cache:
            out = tmp_path_factory.mktemp(f"engine-{backend}") / "engine"
            engine = build_engine(tiny, plan, CompileSettings(backend=backend), out=out)
            cache[backend] = engine.save(out)
        return cache[backend]

    return get


@pytest.fixture(scope="module")
def onnx_engine(built):
    return Engine.load(built("onnx"))






def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))




def test_compile_save_reload_in_fresh_process(built):
    env = dict(os.environ, PYTHONPATH=SRC, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(built("onnx"))], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnx"
    assert [(b, t) for b, t, *_ in result["rows"]] == [(b, t) for b in BATCHES for t in LENGTHS]
    for b, t, shape, err, top1 in result["rows"]:
        assert shape == [b, t, 1000], (b, t, shape)
        assert err < 1e-4 and top1, f"batch {b} seq {t}: max abs error {err}, top-1 agree {top1}"


# ---- calls checked against the plan ---------------------------------------------------------------

def test_padding_keeps_a_user_mask(tiny, onnx_engine):
    ids = torch.randint(0, 1000, (1, 1))
    torch.testing.assert_close(onnx_engine(ids, torch.ones_like(ids)), hf_logits(tiny, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad,fragment", [
    (torch.randint(0, 1000, (5, 3)), "batch 5 is outside this engine's batch range 1..3"),
    (torch.randint(0, 1000, (1, 65)), "seq 65 is outside this engine's seq range 1..64"),
    (torch.full((1, 3), 1000), "token id 1000 is outside the vocabulary"),
    (torch.full((1, 3), -1), "token id -1"),
    (torch.zeros(1, 3), "dtype float32"),
    (torch.zeros(3, dtype=torch.long), "rank 1"),
    ([[1, 2]], "must be a tensor"),
])
def test_calls_outside_the_plan_raise_our_error(onnx_engine, bad, fragment):
    with pytest.raises(EngineError) as info:
        onnx_engine(bad)
    assert fragment in info.value.one_line() and "Fix:" in info.value.one_line()


def test_out_of_range_error_names_the_rebuild_command_and_masks_must_match(onnx_engine):
    with pytest.raises(EngineError) as info:
        onnx_engine(torch.randint(0, 1000, (1, 100)))
    assert "--seq 1:100 --batch 1:3 --backend onnx" in info.value.fix
    with pytest.raises(EngineError, match="attention_mask shape"):
        onnx_engine(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))


def test_a_forward_engine_generates_with_the_no_cache_loop(tiny, onnx_engine):
    from dynashape import api

    kv = api.compile("random:tiny", seq="1:64", batch="1:3", backend="eager", loaded=tiny)
    prompts = [[5, 6, 7], [9], list(range(1, 20))]
    assert onnx_engine.generate(prompts, 12, ignore_eos=True) == kv.generate(prompts, 12, ignore_eos=True)
    with pytest.raises(GenerateError, match="beyond this engine's 64"):
        onnx_engine.generate([[1] * 60], 10)
    with pytest.raises(EngineError, match="no KV-cache graphs"):
        onnx_engine.generator


# ---- ONNX: TensorRT profiles and the decode graph -------------------------------------------------

def test_onnx_axes_are_named_from_the_plan(built):
    import onnx

    directory = built("onnx")
    names = {}
    for f in ("model.onnx", "decode.onnx"):
        graph = onnx.load(str(directory / f), load_external_data=False).graph
        names[f] = {v.name: [d.dim_param.replace(" ", "") or d.dim_value for d in v.type.tensor_type.shape.dim]
                    for v in [*graph.input, *graph.output]}
    assert names["model.onnx"]["input_ids"] == names["model.onnx"]["attention_mask"] == ["batch", "seq"]
    assert names["model.onnx"]["logits"] == ["batch", "seq", 1000]
    dec = names["decode.onnx"]
    assert dec["input_ids"] == ["batch", 1] and dec["attention_mask"] == ["batch", "past+1"]
    assert dec["past_key_values.1.value"] == ["batch", 4, "past", 16]
    assert dec["present.0.key"] == ["batch", 4, "past+1", 16]


def test_onnx_profiles_are_consistent_and_written_for_trtexec(built):
    directory = built("onnx")
    doc = json.loads((directory / "trt_profile.json").read_text())
    assert set(doc["graphs"]) == {"model", "decode"}
    for profile in doc["graphs"].values():
        assert onnx_backend.profile_violations(profile, 256) == []
    model = doc["graphs"]["model"]["shapes"]
    assert model["min"] == {"input_ids": [2, 2], "attention_mask": [2, 2]}
    assert model["opt"] == {"input_ids": [3, 16], "attention_mask": [3, 16]}
    assert model["max"] == {"input_ids": [3, 64], "attention_mask": [3, 64]}
    dec = doc["graphs"]["decode"]["shapes"]
    assert dec["min"]["attention_mask"] == [2, 3] and dec["min"]["past_key_values.0.key"] == [2, 4, 2, 16]
    assert dec["max"]["attention_mask"] == [3, 64] and dec["max"]["past_key_values.1.value"] == [3, 4, 63, 16]
    lines = (directory / "trt_profile.txt").read_text().splitlines()
    assert lines[0] == ("trtexec --onnx=model.onnx --minShapes=input_ids:2x2,attention_mask:2x2 "
                        "--optShapes=input_ids:3x16,attention_mask:3x16 --maxShapes=input_ids:3x64,attention_mask:3x64")
    assert lines[1].startswith("trtexec --onnx=decode.onnx --minShapes=input_ids:2x1,attention_mask:2x3,")


def test_profile_violations_catch_broken_relations(built):
    profile = json.loads((built("onnx") / "trt_profile.json").read_text())["graphs"]["decode"]
    broken = json.loads(json.dumps(profile))
    broken["shapes"]["max"]["attention_mask"] = [3, 65]            # mask != past + 1
    broken["shapes"]["opt"]["input_ids"] = [2, 1]                  # batch differs across inputs
    broken["shapes"]["min"]["past_key_values.0.key"][1] = 8        # a fixed axis (n_head) changed
    found = onnx_backend.profile_violations(broken, 256)
    assert any(v.startswith("max: inputs disagree on past") for v in found), found
    assert any(v.startswith("opt: inputs disagree on batch") for v in found), found
    assert any("fixes 4" in v for v in found), found
    assert any("exceeds n_positions 63" in v for v in onnx_backend.profile_violations(profile, 63))


def _hf_step(model, prompt, nxt):
    """HF with a real cache: prefill ``prompt``, then one step on ``nxt``; (past, logits, presents)."""
    with torch.no_grad():
        first = model(input_ids=prompt, use_cache=True)
        cache = first.get("past_key_values")
        past = onnx_backend.flat_cache(cache)
        step = model(input_ids=nxt, use_cache=True, **{onnx_backend.cache_kwarg(model): cache})
    return past, step.logits, onnx_backend.flat_cache(step.get("past_key_values"))


def test_onnxruntime_at_every_profile_point(built):
    engine = Engine.load(built("onnx"))
    ref = engine.reference_model()
    doc = json.loads((built("onnx") / "trt_profile.json").read_text())["graphs"]
    g = torch.Generator().manual_seed(2)
    for name in ("min", "opt", "max"):  # no-cache graph: straight through onnxruntime at the point
        shape = doc["model"]["shapes"][name]["input_ids"]
        ids = torch.randint(0, 1000, shape, generator=g)
        got = engine.runners["forward"](input_ids=ids, attention_mask=torch.ones_like(ids))
        assert (got - ref(input_ids=ids).logits).abs().max() < 1e-4, name
    for name in ("min", "opt", "max"):  # decode graph, fed the past of a real HF cache
        b, p = doc["decode"]["points"][name]["batch"], doc["decode"]["points"][name]["past"]
        prompt = torch.randint(0, 1000, (b, p), generator=g)
        nxt = torch.randint(0, 1000, (b, 1), generator=g)
        past, want, want_present = _hf_step(ref, prompt, nxt)
        assert list(past[0].shape) == doc["decode"]["shapes"][name]["past_key_values.0.key"]
        logits, present = engine.runners["forward"].decode(nxt, torch.ones(b, p + 1, dtype=torch.long), past)
        assert (logits - want).abs().max() < 1e-4, name
        assert len(present) == len(want_present) == 4
        assert all((a - w).abs().max() < 1e-4 for a, w in zip(present, want_present)), name


def test_onnx_decode_pads_batch_one_and_refuses_short_past(built):
    engine = Engine.load(built("onnx"))
    ref = engine.reference_model()
    prompt, nxt = torch.randint(0, 1000, (1, 9)), torch.tensor([[5]])
    past, want, _ = _hf_step(ref, prompt, nxt)
    logits, present = engine.runners["forward"].decode(nxt, torch.ones(1, 10, dtype=torch.long), past)
    assert logits.shape == (1, 1, 1000) and present[0].shape == (1, 4, 10, 16)
    assert (logits - want).abs().max() < 1e-4
    short = [t[:, :, :1] for t in past]
    with pytest.raises(EngineError) as err:
        engine.runners["forward"].decode(nxt, torch.ones(1, 2, dtype=torch.long), short)
    assert "past 2..63" in one_line(err)


def test_decode_graph_needs_room(tiny):
    spec, reason = onnx_backend.decode_spec(make_plan_for(tiny, "1:4", "1"))
    assert spec is None and "decode graph" in reason
    spec, _ = onnx_backend.decode_spec(make_plan_for(tiny, "1:256", "1:8"))
    assert spec.dims["past"].max == 255 and spec.dims["batch"].max == 8  # past + 1 <= n_positions 256


# ---- Torch-TensorRT contract (stand-in module) ----------------------------------------------------

class FakeTRTModule:
    """What the stand-in 'compiles' to: checks shapes against its Inputs like a TensorRT profile."""

    def __init__(self, program, inputs):
        self.fn, self.inputs, self.seen = program.module(), inputs, []

    def __call__(self, **feeds):
        for name, t in feeds.items():
            spec = self.inputs[name].kw
            if not all(lo <= s <= hi for lo, s, hi in zip(spec["min_shape"], t.shape, spec["max_shape"])):
                raise RuntimeError(f"{name} {tuple(t.shape)} does not satisfy any optimization profile")
        self.seen.append({k: tuple(v.shape) for k, v in feeds.items()})
        return self.fn(**feeds)


def stand_in_torch_tensorrt(calls: dict, new_api: bool) -> types.ModuleType:
    """A STAND-IN for torch_tensorrt. TensorRT cannot be installed on this project's machines (its
    libraries are not on the registries they reach), so this fake records exactly what dynashape
    passes to Torch-TensorRT's public API. It proves the contract, not that TensorRT runs."""
    mod = types.ModuleType("torch_tensorrt")
    mod.__version__ = "9.9.9-standin"

    class Input:
        def __init__(self, **kw):
            self.kw = kw

    def record(program, kwarg_inputs, **options):
        calls["compile"] = {"kwarg_inputs": kwarg_inputs, **options}
        return FakeTRTModule(program, kwarg_inputs)

    if new_api:  # Torch-TensorRT 2.6+: use_explicit_typing
        def compile(exported_program, inputs=None, *, arg_inputs=None, kwarg_inputs=None, device=None,
                    use_explicit_typing=False, enabled_precisions=None, truncate_double=False, min_block_size=5):
            return record(exported_program, kwarg_inputs, arg_inputs=arg_inputs, device=device,
                          use_explicit_typing=use_explicit_typing, enabled_precisions=enabled_precisions,
                          truncate_double=truncate_double, min_block_size=min_block_size)
    else:  # older: enabled_precisions only
        def compile(exported_program, inputs=None, *, arg_inputs=None, kwarg_inputs=None, device=None,
                    enabled_precisions=None, truncate_double=False, min_block_size=5):
            return record(exported_program, kwarg_inputs, arg_inputs=arg_inputs, device=device,
                          enabled_precisions=enabled_precisions, truncate_double=truncate_double,
                          min_block_size=min_block_size)

    def save(module, file_path, *, output_format="exported_program", arg_inputs=None, kwarg_inputs=None,
             dynamic_shapes=None, retrace=True):
        calls["save"] = dict(output_format=output_format, arg_inputs=arg_inputs, kwarg_inputs=kwarg_inputs,
                             dynamic_shapes=dynamic_shapes)
        calls["module"] = module
        Path(file_path).write_bytes(b"stand-in TensorRT program")

    def load(file_path):
        return types.SimpleNamespace(module=lambda: calls["module"])

    mod.Input, mod.save, mod.load = Input, save, load
    mod.dynamo = types.SimpleNamespace(compile=compile)
    return mod


@pytest.mark.parametrize("new_api", [True, False], ids=["explicit-typing", "enabled-precisions"])
def test_tensorrt_contract_with_stand_in(new_api, tiny, monkeypatch, tmp_path):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "torch_tensorrt", stand_in_torch_tensorrt(calls, new_api))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    plan = trt_plan = make_plan_for(tiny, "1:64", "1:3", backend="tensorrt")
    program = export_plan(tiny.model, plan).program
    runner = trt_backend._compile(program, trt_plan, CompileSettings(backend="tensorrt", device="cuda", dtype="float16"))
    c = calls["compile"]
    assert list(c["kwarg_inputs"]) == ["input_ids", "attention_mask"] and c["arg_inputs"] == ()
    for name, inp in c["kwarg_inputs"].items():  # shared dims: identical profiles for both inputs
        assert inp.kw == {"min_shape": (2, 2), "opt_shape": (3, 16), "max_shape": (3, 64),
                          "dtype": torch.int64, "name": name}
    assert c["device"] == torch.device("cuda") and c["min_block_size"] == 1 and c["truncate_double"] is True
    if new_api:
        assert c["use_explicit_typing"] is True and c["enabled_precisions"] is None
    else:
        assert c["enabled_precisions"] == {torch.float16}

    # Padded sizes are still served: the Engine pads batch/seq 1 before the TensorRT module sees them.
    # (The stand-in runs the program on CPU, so the engine around it does too.)
    runner.settings = CompileSettings("tensorrt", "cpu")
    engine = Engine(plan, "tensorrt", {"forward": runner}, runner.settings, tiny.config.to_dict(), program=program)
    ref = engine.reference_model()
    for b, t in ((1, 1), (2, 2), (3, 64), (1, 17)):
        ids = torch.randint(0, 1000, (b, t))
        assert (engine(ids) - ref(input_ids=ids).logits).abs().max() < 1e-4
    assert runner.module.seen[0] == {"input_ids": (2, 2), "attention_mask": (2, 2)}
    with pytest.raises(EngineError):
        engine(torch.zeros(1, 65, dtype=torch.long))
    assert len(runner.module.seen) == 4

    # Save / load: an exported program with shared Dims, reloaded through torch_tensorrt.load.
    directory = engine.save(tmp_path / "trt")
    s = calls["save"]
    assert s["output_format"] == "exported_program" and s["arg_inputs"] == ()
    assert {k: tuple(v.shape) for k, v in s["kwarg_inputs"].items()} == {"input_ids": (3, 16),
                                                                      "attention_mask": (3, 16)}
    assert s["dynamic_shapes"]["input_ids"][1] is s["dynamic_shapes"]["attention_mask"][1]
    assert str(s["dynamic_shapes"]) == str(dynamic_shapes(plan))
    loaded = Engine.load(directory, device="cuda")
    assert loaded.runners["forward"].module is runner.module
    monkeypatch.setattr(sys.modules["torch_tensorrt"], "__version__", "10.0.0")
    with pytest.raises(EngineError) as err:
        Engine.load(directory, device="cuda")
    assert "Torch-TensorRT 9.9.9-standin" in one_line(err)


def test_tensorrt_missing_or_on_cpu(plan, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    with pytest.raises(BackendError) as err:
        trt_backend.build(plan, CompileSettings(backend="tensorrt", device="cuda"))
    assert "pip install dynashape[tensorrt]" in one_line(err)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", stand_in_torch_tensorrt({}, True))
    with pytest.raises(BackendError) as err:
        trt_backend.build(plan, CompileSettings(backend="tensorrt", device="cpu"))
    assert "--device cuda" in one_line(err)


# ---- bad inputs -------------------------------------------------------------------------------

def test_engine_from_another_backend(built, tmp_path):
    directory = copy_engine(built("onnx"), tmp_path)
    edit_json(directory / "engine.json", backend="aoti")
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    text = one_line(err)
    assert "no aoti artifact" in text and "model.onnx" in text and "another backend" in text


def test_engine_from_another_version(built, tmp_path):
    directory = copy_engine(built("onnx"), tmp_path)
    edit_json(directory / "engine.json", dynashape="0.0.1")
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    assert "dynashape 0.0.1" in one_line(err)


def test_truncated_or_edited_artifact(built, tmp_path):
    directory = copy_engine(built("onnx"), tmp_path)
    data = (directory / "model.onnx").read_bytes()
    (directory / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    assert "does not match its checksum" in one_line(err)
    rehash(directory)  # edited with its checksum updated: onnxruntime must still fail cleanly
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    assert "could not be loaded by onnxruntime" in one_line(err)


def test_plan_not_matching_artifact(built, tmp_path):
    directory = copy_engine(built("onnx"), tmp_path)
    assert_widened_plan_is_refused(directory, "onnx")


def test_onnxruntime_missing(built, plan, monkeypatch):
    directory = built("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendError) as err:
        Engine.load(directory)
    assert "needs onnxruntime" in one_line(err) and "pip install dynashape[onnx]" in one_line(err)
    with pytest.raises(BackendError):
        get_backend("onnx").build(plan, CompileSettings(backend="onnx"))


def test_nothing_overwritten_without_force(built, tmp_path):
    directory = copy_engine(built("onnx"), tmp_path)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    engine = Engine.load(directory)
    with pytest.raises(EngineError) as err:
        engine.save(directory)
    assert "--force" in one_line(err)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    engine.save(directory, force=True)
    assert Engine.load(directory).backend == "onnx"




def test_bench_backends_writes_json_png_and_table(tmp_path):
    from dynashape.bench import backends as bb

    s = bb.BackendBenchSettings(model="random:tiny", backends=("eager", "onnx", "tensorrt"), lengths=(4, 8), device="cpu",
                                warmup=1, iters=3, isolate=False, command="test")
    result = bb.run_backend_bench(s)
    eager, onnx, trt = (result["backends"][b] for b in ("eager", "onnx", "tensorrt"))
    for row, graph in ((eager, "prefill"), (onnx, "forward")):
        assert row["status"] == "ok" and row["graph"] == graph
        assert row["max_abs_err_vs_hf"] < 1e-4 and row["top1_agree_vs_hf"] == 1.0
        assert set(row["by_length"]) == {"4", "8"} and all(r["iters"] == 3 for r in row["by_length"].values())
        assert all(0 < r["median_ms"] <= r["p90_ms"] for r in row["by_length"].values())
    assert trt["status"] == "skipped" and "tensorrt" in trt["reason"]  # no GPU / no TensorRT here
    assert result["command"] == "test" and result["machine"]["torch"] == torch.__version__
    bb.write_results(result, str(tmp_path / "r.json"), str(tmp_path / "r.png"))
    assert json.loads((tmp_path / "r.json").read_text())["lengths"] == [4, 8]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    table = bb.format_table(result)
    assert "eager" in table and "tensorrt: skipped" in table and len(table.splitlines()) == 7
