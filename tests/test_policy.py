"""The runtime-policy rules (planning/policy.py): graphs per backend, the cache, decode kernels, prefill
buckets, CUDA-graph batch sizes; and the plan's JSON. Plain data, no model built: fast."""
import pytest

from dynashape.errors import ShapeError
from dynashape.planning import policy
from dynashape.planning.rules import PlanSettings, make_plan
from dynashape.planning.shapes import Range, ShapePlan

GPT2 = {"name": "gpt2", "n_positions": 1024, "vocab_size": 50257, "n_layer": 12, "n_head": 12, "n_embd": 768}
XL = dict(GPT2, name="gpt2-xl", n_layer=48, n_head=25, n_embd=1600)
NEW = {"torch": "2.13.0", "transformers": "5.24.0"}


def plan(seq="1:1024", batch="1:64", model=GPT2, **kw):
    lo, hi = (int(x) for x in seq.split(":"))
    blo, bhi = (int(x) for x in batch.split(":"))
    return make_plan(model, PlanSettings(seq=Range(lo, hi), batch=Range(blo, bhi), **kw), NEW)


def finding(p, rule):
    return next(f for f in p.findings if f.rule == rule)


@pytest.fixture
def triton_here(monkeypatch):
    monkeypatch.setattr(policy, "_triton_ok", lambda: True)


@pytest.mark.parametrize("backend,graphs,kind", [
    ("eager", ["prefill", "decode"], "generation"), ("inductor", ["prefill", "decode"], "generation"),
    ("aoti", ["prefill", "decode"], "generation"), ("onnx", ["forward"], "forward"), ("tensorrt", ["forward"], "forward")])
def test_each_backend_holds_its_graphs(backend, graphs, kind):
    p = plan(backend=backend)
    assert list(p.graphs) == graphs and p.runtime.kind == kind and p.runtime.backend == backend
    if kind == "generation":
        assert [i.name for i in p.graphs["decode"]] == ["tok", "pos", "slots"]
        assert all(i.dims == ["batch"] for i in p.graphs["decode"]) and p.graphs["prefill"][0].dims == ["batch", "seq"]


def test_auto_backend_is_eager_on_a_gpu_and_inductor_on_the_cpu():
    assert plan(device="cuda").runtime.backend == "eager"
    assert plan(device="cpu").runtime.backend == "inductor"


def test_the_cache_holds_the_batch_plus_a_scratch_slot_and_one_spare_position():
    p = plan(backend="eager", dtype="float16")
    assert (p.runtime.cache_slots, p.runtime.cache_len, p.runtime.scratch_slot) == (65, 1025, 64)
    assert "2.29 GiB in float16" in finding(p, "kv-cache").message
    refused = plan(seq="1:1", backend="eager")
    assert not refused.ok and "no position for a new token" in finding(refused, "kv-cache").message


def test_the_eager_backend_pads_nothing_and_compiled_backends_start_at_two():
    eager, inductor = plan(backend="eager"), plan(backend="inductor")
    assert eager.pad_to == {} and (eager.graph["batch"].min, eager.graph["batch"].max) == (1, 64)
    assert inductor.pad_to == {"batch": {1: 2}, "seq": {1: 2}} and inductor.graph["seq"].min == 2


def test_fused_kernels_on_a_gpu_with_triton_for_the_eager_backend(triton_here):
    p = plan(device="cuda", backend="eager")
    assert (p.runtime.kernels, p.runtime.attention, p.runtime.prefill) == ("fused", "kernel", "fused")
    assert "prefill: the same fused kernels" in finding(p, "decode-kernels").message
    assert plan(device="cuda", backend="eager", fused_prefill=False).runtime.prefill == "torch"
    assert plan(device="cuda", backend="inductor").runtime.prefill == "torch"
    assert plan(device="cuda", backend="inductor").runtime.kernels == "torch"
    aoti = plan(device="cuda", backend="aoti")
    assert (aoti.runtime.kernels, aoti.runtime.attention) == ("torch", "matmul")   # a Python op cannot run in AOTI
    assert plan(device="cuda", backend="eager", kernels="torch").runtime.kernels == "torch"
    assert plan(device="cuda", backend="eager", model=XL).runtime.kernels == "fused"        # head_dim 64
    assert plan(device="cpu", backend="eager").runtime.kernels == "torch"


@pytest.mark.parametrize("kw,why,fix", [
    (dict(device="cpu", backend="eager", kernels="fused"), "need a CUDA GPU", "--device cuda"),
    (dict(device="cuda", backend="inductor", kernels="fused"), "eager backend only", "--kernels torch"),
    (dict(device="cuda", backend="eager", kernels="cuda"), "not a choice", "--kernels auto"),
])
def test_fused_kernels_where_they_cannot_run_are_refused(triton_here, kw, why, fix):
    p = plan(**kw)
    f = finding(p, "decode-kernels")
    assert not p.ok and f.status == "REFUSED" and why in f.message and fix in f.fix


def test_prefill_buckets_and_cuda_graph_batches():
    cpu = plan(backend="eager")
    assert cpu.runtime.prefill_bucket == 1 and cpu.runtime.cuda_graph_batches == []
    gpu = plan(batch="1:48", device="cuda", backend="eager")
    assert gpu.runtime.prefill_bucket == 64 and gpu.runtime.cuda_graph_batches == [1, 2, 4, 8, 16, 32, 48]
    chosen = plan(batch="1:48", device="cuda", backend="eager", graph_batches=(1, 8), prefill_bucket=16)
    assert chosen.runtime.cuda_graph_batches == [1, 8, 48] and chosen.runtime.prefill_bucket == 16
    assert "48" in finding(chosen, "cuda-graphs").message


@pytest.mark.parametrize("kw,needle,fix", [
    (dict(device="cuda", graph_batches=(0, 8)), "--graph-batches 0 is outside 1..64", "--graph-batches 1,2,4"),
    (dict(device="cuda", graph_batches=(128,)), "128 is outside", ""),
    (dict(device="cpu", graph_batches=(8,)), "needs a CUDA generation engine", "--device cuda"),
    (dict(device="cuda", prefill_bucket=0), "--prefill-bucket 0 is below 1", "--prefill-bucket 64"),
])
def test_bad_policy_overrides_are_refused_with_a_fix(kw, needle, fix):
    p = plan(backend="eager", **kw)
    assert not p.ok and needle in p.refused[0].message and fix in p.refused[0].fix


def test_the_plan_round_trips_through_json_and_an_older_format_is_refused():
    p = plan(device="cuda", backend="eager")
    back = ShapePlan.from_json(p.to_json())
    assert back.runtime == p.runtime and back.graphs == p.graphs and back.serve == p.serve
    old = dict(p.to_json(), format=1)
    with pytest.raises(ShapeError, match="from an older dynashape") as e:
        ShapePlan.from_json(old)
    assert "dynashape compile" in e.value.fix
