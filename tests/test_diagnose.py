"""diagnose: every row of the DESIGN.md trap catalogue.

Each row is reproduced with the real exporter / compiler / runtime on ``random:tiny`` (a real
GPT2LMHeadModel, n_positions 256) where the installed torch and transformers reproduce it, and
skipped with the reason elsewhere; ``test_catalogue_text`` also feeds the error text DESIGN.md quotes
for each raising row, so every row is covered on every version.
"""
import io
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers
from torch.export import Dim, export

from dynashape.planning.diagnose import Diagnosis, as_export_error, diagnose, diagnose_program, sources, suggested_fixes
from dynashape.errors import ExportError
from dynashape.models import load_model
from dynashape.planning.shapes import InputSpec, Range, ShapePlan

TF = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
TF_EAGER_MASK_BUFFER = TF <= (5, 1)  # eager attention slices the (n_positions x n_positions) mask buffer
N_POS, VOCAB = 256, 1000              # random:tiny
NAMES = ["input_ids", "attention_mask"]

pytestmark = pytest.mark.integration


class Logits(torch.nn.Module):
    """GPT2LMHeadModel -> logits only, without a cache (what dynashape exports)."""

    def __init__(self, model, use_cache=False):
        super().__init__()
        self.m, self.use_cache = model, use_cache

    def forward(self, input_ids, attention_mask):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=self.use_cache)
        return out if self.use_cache else out.logits


@pytest.fixture(scope="module")
def sdpa():
    return Logits(load_model("random:tiny").model)


@pytest.fixture(scope="module")
def eager():
    return Logits(load_model("random:tiny", attn_implementation="eager").model)


def ids(b, t):
    return torch.randint(0, VOCAB, (b, t)), torch.ones(b, t, dtype=torch.long)


def seq_dims(dim, batch=None):
    axes = {1: dim} if batch is None else {0: batch, 1: dim}
    return {"input_ids": dict(axes), "attention_mask": dict(axes)}


def make_plan(seq=(2, 200), serve_seq=(1, 200), example=8, inputs=None):
    inputs = inputs or [InputSpec(n, "int64", ["batch", "seq"]) for n in NAMES]
    return ShapePlan(model={"name": "random:tiny", "n_positions": N_POS, "vocab_size": VOCAB},
                     serve={"seq": Range(*serve_seq), "batch": Range(1, 1)},
                     graph={"seq": Range(*seq), "batch": Range(1, 1)},
                     examples={"seq": example, "batch": 1}, pad_to={}, inputs=inputs)


def raised(fn) -> BaseException:
    try:
        fn()
    except Exception as e:  # the test is about which error it is
        return e
    pytest.fail("expected an error, got none")


def check(d: Diagnosis | None, kind, inp=None, dim=None, fix=()):
    assert d is not None, "error not recognised"
    assert d.kind == kind, d
    if inp is not None:
        assert (d.input, d.dim) == (inp, dim), d
    for part in (fix,) if isinstance(fix, str) else fix:
        assert part in d.fix, (part, d.fix)
    line = d.one_line()
    assert "\n" not in line and " ".join(d.cause.split()) in line and " ".join(d.fix.split()) in line
    return d


# ---- row 1: Dim / DYNAMIC on a dim whose example is 0 or 1 ---------------------------------
def test_row1_seq_example_of_1_is_specialised(sdpa):
    e = raised(lambda: export(sdpa, ids(1, 1), dynamic_shapes=seq_dims(Dim("seq", max=200))))
    d = check(diagnose(e, input_names=NAMES), "specialized_constant", "input_ids", 1, "--example-len")
    assert d.torch_suggestions == ["seq = 1"]  # torch's suggestion, which would make the graph static
    assert "static" in d.cause
    d = check(diagnose(e, input_names=NAMES, plan=make_plan(example=8)), "specialized_constant", fix="--example-len 8")


def test_row1_batch_example_of_1_is_specialised(sdpa):
    batch = Dim("batch", max=8)
    e = raised(lambda: export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=200), batch)))
    check(diagnose(e, plan=make_plan()), "specialized_constant", "input_ids", 0, "--batch")


# ---- row 2: Dim.AUTO with an example of 1 "succeeds" with no dynamic dim --------------------
def test_row2_auto_with_example_1_has_no_dynamic_dims(sdpa):
    ep = export(sdpa, ids(1, 1), dynamic_shapes=seq_dims(Dim.AUTO))
    assert dict(ep.range_constraints) == {}
    [d] = diagnose_program(ep)
    check(d, "no_dynamic_dims", "input_ids", 1, "--example-len")
    good = export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=200)))
    assert diagnose_program(good) == [] and diagnose_program(good, make_plan()) == []


# ---- row 3: example outside the Dim's range --------------------------------------------------
def test_row3_example_outside_range(sdpa):
    e = raised(lambda: export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=8, max=200))))
    assert "7 not in range [8, 200]" in str(e)
    for plan in (None, make_plan(seq=(8, 200), example=7)):
        d = check(diagnose(e, input_names=NAMES, plan=plan), "example_outside_range", "input_ids", 1, "--example-len")
        assert 8 < int(re.search(r"--example-len (\d+)", d.fix).group(1)) < 200  # strictly inside


# ---- row 4: no min -> [0, max]; length 0 crashes inside the model ----------------------------
def test_row4_missing_min_gives_zero(sdpa):
    ep = export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", max=200)))
    [d] = diagnose_program(ep)
    check(d, "min_zero", "input_ids", 1, "--seq 1:200")
    e = raised(lambda: ep.module()(*ids(1, 0)))
    check(diagnose(e, plan=make_plan()), "min_zero", "input_ids", 1, "--seq 1:200")


# ---- row 5: min=1 with an example >= 2: reported [1, max], lower bound never checked ---------
def test_row5_min_1_is_reported_but_unchecked(sdpa):
    ep = export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=1, max=200)))
    [d] = diagnose_program(ep, make_plan())
    check(d, "lower_bound_unchecked", "input_ids", 1, "--seq 1:200")
    strict = export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=200)))
    assert strict.module()(*ids(1, 1)).shape == (1, 1, VOCAB)  # the trap: min=2 is not checked either


# ---- row 6: max above n_positions: export succeeds, run time fails ---------------------------
def test_row6_max_above_positions(sdpa):
    ep = export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=1000)))
    for plan in (None, make_plan()):  # n_positions from the plan, or from the program's wpe weight
        [d] = diagnose_program(ep, plan)
        check(d, "position_limit", "input_ids", 1, f"--seq 2:{N_POS}")
    for run in (lambda: ep.module()(*ids(1, N_POS + 1)), lambda: sdpa.m(ids(1, N_POS + 1)[0])):
        e = raised(run)
        assert isinstance(e, IndexError)
        check(diagnose(e, plan=make_plan()), "position_limit", "input_ids", 1, f"--seq 1:{N_POS}")


# ---- row 7: transformers <= 5.1, eager attention, max >= n_positions ------------------------
@pytest.mark.skipif(not TF_EAGER_MASK_BUFFER, reason=f"transformers {transformers.__version__} (>= 5.2) eager "
                    "attention no longer slices the causal-mask buffer: no `!= n_positions` guard")
def test_row7_causal_mask_buffer_and_retry(eager):
    e = raised(lambda: export(eager, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=1000))))
    d = check(diagnose(e, input_names=NAMES), "causal_mask_buffer", "input_ids", 1,
              ("--attn sdpa", f"--seq 1:{N_POS - 1}"))
    assert d.torch_suggestions == [f"seq = Dim('seq', max={N_POS})"] and d.retry is None  # a bound: no retry
    # torch's own suggestion fails again, on `!= 256` only: that guard can become a run-time assert
    again = Dim("seq", min=2, max=N_POS)
    e2 = raised(lambda: export(eager, ids(1, 7), dynamic_shapes=seq_dims(again)))
    d2 = check(diagnose(e2, plan=make_plan(seq=(2, N_POS))), "causal_mask_buffer", "input_ids", 1, "--attn sdpa")
    assert d2.retry == {"prefer_deferred_runtime_asserts_over_guards": True}
    ep = export(eager, ids(1, 7), dynamic_shapes=seq_dims(again), **d2.retry)
    x = ids(1, N_POS - 1)
    torch.testing.assert_close(ep.module()(*x), eager(*x))
    e3 = raised(lambda: ep.module()(*ids(1, N_POS)))  # the excluded size is refused loudly
    check(diagnose(e3, plan=make_plan(seq=(2, N_POS))), "guard_failed_at_runtime", fix="--attn sdpa")


@pytest.mark.skipif(TF_EAGER_MASK_BUFFER, reason="transformers <= 5.1: the causal-mask guard is tested above")
def test_row7_absent_on_new_transformers(eager):
    ep = export(eager, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=N_POS)))
    assert diagnose_program(ep) == []


# ---- row 8: mark_dynamic(min=1) under torch.compile -----------------------------------------
def test_row8_mark_dynamic_min_1_recompiles(sdpa):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(sdpa, backend=backend)
    a, b = ids(1, 7)
    for t in (a, b):
        torch._dynamo.mark_dynamic(t, 1, min=1, max=N_POS - 1)
    compiled(a, b)
    compiled(*ids(1, 1))  # length 1 silently builds a second graph
    assert len(graphs) == 2
    with torch._dynamo.config.patch(error_on_recompile=True):
        e = raised(lambda: compiled(*ids(1, N_POS)))
    d = check(diagnose(e, input_names=NAMES), "recompile", fix=f"--seq 1:{N_POS - 1}")
    assert d.input in NAMES and d.dim == 1 and re.search(rf"2 <= \S*size\(\)\[1\] <= {N_POS - 1}", d.cause)
    e = raised(lambda: compiled(*ids(1, N_POS + 1)))  # the recompiled graph has no upper bound
    assert len(graphs) == 3
    check(diagnose(e, plan=make_plan()), "position_limit", "input_ids", 1, f"--seq 1:{N_POS}")
    c, m = ids(1, 1)  # marking a size-1 input dynamic raises the specialisation error
    for t in (c, m):
        torch._dynamo.mark_dynamic(t, 1, min=1, max=N_POS - 1)
    torch._dynamo.reset()
    e = raised(lambda: torch.compile(sdpa, backend=backend)(c, m))
    d = check(diagnose(e), "specialized_constant", fix="--example-len")
    assert d.input in NAMES and d.dim == 1
    torch._dynamo.reset()


# ---- row 9: inputs that must share a dim ------------------------------------------------------
def test_row9_separate_dims_must_be_equal(sdpa):
    shapes = {"input_ids": {1: Dim("a", max=200)}, "attention_mask": {1: Dim("b", max=200)}}
    e = raised(lambda: export(sdpa, ids(1, 7), dynamic_shapes=shapes))
    d = check(diagnose(e, input_names=NAMES), "shared_dim", "attention_mask", 1, "--seq MIN:MAX")
    assert d.torch_suggestions == ["b = a"]


def test_row9_static_mask_pins_the_length(sdpa):
    shapes = {"input_ids": {1: Dim("seq", min=2, max=200)}, "attention_mask": None}
    e = raised(lambda: export(sdpa, ids(1, 7), dynamic_shapes=shapes))
    assert "constant (7)" in str(e)
    check(diagnose(e, input_names=NAMES, plan=make_plan()), "shared_dim", "input_ids", 1, "--seq MIN:MAX")


# ---- row 10: use_cache=True ---------------------------------------------------------------------
def test_row10_dynamic_cache_output(sdpa):
    module = Logits(sdpa.m, use_cache=True)
    shapes = seq_dims(Dim("seq", min=2, max=200))
    if TF < (5, 0):
        try:
            export(module, ids(1, 7), dynamic_shapes=shapes)
        except Exception as e:  # some 4.x versions return a DynamicCache too
            check(diagnose(e), "pytree_cache", fix="use_cache=False")
            return
        pytest.skip(f"transformers {transformers.__version__} returns the legacy tuple cache, a known pytree")
    e = raised(lambda: export(module, ids(1, 7), dynamic_shapes=shapes))
    check(diagnose(e), "pytree_cache", fix="use_cache=False")


# ---- row 11: ONNX (dynamo=True) with an example of length 1 -----------------------------------
def _onnx_dynamo(module, example):
    shapes = seq_dims(Dim("seq", max=200), Dim("batch", max=8))
    return torch.onnx.export(module, example, dynamo=True, input_names=NAMES, dynamic_shapes=shapes)


def test_row11_onnx_dynamo_sdpa_example_1(sdpa):
    e = raised(lambda: _onnx_dynamo(sdpa, ids(1, 1)))
    d = diagnose(e, input_names=NAMES)
    if TF >= (5, 0):  # sdpa's `is_causal = q_len > 1` turns into a SymBool
        check(d, "onnx_symbool", "input_ids", 1, "--example-len")
    else:  # transformers 4.x fails one step earlier, on the ranges of the size-1 example
        assert "Invalid ranges" in str(e)
        check(d, "specialized_constant", fix="--example-len")


def test_row11_onnx_dynamo_eager_example_1_is_static(eager):
    try:
        program = _onnx_dynamo(eager, ids(1, 1))
    except Exception as e:
        d = diagnose(e, input_names=NAMES)
        assert d is not None and d.kind in ("specialized_constant", "onnx_symbool"), e
        pytest.skip(f"transformers {transformers.__version__}: eager ONNX export with length 1 raises ({d.kind})")
    dims = [d.dim_value for d in program.model_proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1]  # silently static
    [d] = diagnose_program(program)
    check(d, "no_dynamic_dims", "input_ids", 1, "--example-len")


# ---- row 12 and row 6 in ONNX Runtime: legacy exporter ------------------------------------------
class IdsOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False).logits


def _legacy_onnx(module, example, names):
    f = io.BytesIO()
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    torch.onnx.export(module, example, f, dynamo=False, input_names=names, dynamic_axes=axes)
    return f.getvalue()


def test_row12_legacy_onnx_without_mask(sdpa):
    run = lambda: _legacy_onnx(IdsOnly(sdpa.m), (ids(1, 7)[0],), ["input_ids"])  # noqa: E731
    if TF < (5, 0):
        assert len(run()) > 0
        pytest.skip(f"transformers {transformers.__version__} builds no aten::diff without a mask")
    check(diagnose(raised(run)), "onnx_aten_diff", fix="attention_mask")


def test_row6_onnxruntime_gather_out_of_bounds(sdpa):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    model = _legacy_onnx(sdpa, ids(1, 7), NAMES)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    too_long = {n: np.ones((1, N_POS + 1), dtype=np.int64) for n in NAMES}
    e = raised(lambda: session.run(None, too_long))
    check(diagnose(e), "position_limit", "input_ids", 1, f"--seq 1:{N_POS}")  # the limit read from ORT's text


# ---- row 13: decode with a past length -------------------------------------------------------------
class Decode(torch.nn.Module):
    """One decode step over a past of length P: input_ids (B, 1), mask (B, P+1), past (L, B, H, P, D)."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, past_keys, past_values):
        from transformers.cache_utils import DynamicCache

        pairs = [(past_keys[i], past_values[i]) for i in range(past_keys.shape[0])]
        cache = (DynamicCache.from_legacy_cache(tuple(pairs)) if hasattr(DynamicCache, "from_legacy_cache")
                 else DynamicCache(pairs))
        return self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                      use_cache=True).logits


def _decode_inputs(past):
    return (ids(1, 1)[0], torch.ones(1, past + 1, dtype=torch.long),
            torch.randn(2, 1, 4, past, 16), torch.randn(2, 1, 4, past, 16))


def test_row13_decode_past_of_1_and_past_beyond_positions(sdpa):
    decode = Decode(sdpa.m)
    past = Dim("past", max=200)
    shapes = {"input_ids": None, "attention_mask": {1: past + 1}, "past_keys": {3: past}, "past_values": {3: past}}
    e = raised(lambda: export(decode, _decode_inputs(1), dynamic_shapes=shapes))
    plan = make_plan(inputs=[InputSpec("input_ids", "int64", ["batch", "one"]),
                             InputSpec("attention_mask", "int64", ["batch", "past+1"]),
                             InputSpec("past_keys", "float32", ["layer", "batch", "head", "past", "head_dim"]),
                             InputSpec("past_values", "float32", ["layer", "batch", "head", "past", "head_dim"])])
    check(diagnose(e, plan=plan), "specialized_constant", "past_keys", 3, ("past", "static KV-cache"))
    assert decode(*_decode_inputs(N_POS - 1)).shape == (1, 1, VOCAB)  # past + new = n_positions: fine
    e = raised(lambda: decode(*_decode_inputs(N_POS)))
    check(diagnose(e, plan=plan), "position_limit", "input_ids", 1, f"--seq 1:{N_POS}")


# ---- row 14: a length outside the program's range at run time -----------------------------------
def test_row14_guard_failed_at_run_time(sdpa):
    ep = export(sdpa, ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=200)))
    e = raised(lambda: ep.module()(*ids(1, 201)))
    assert "Guard failed" in str(e)
    d = check(diagnose(e, plan=make_plan()), "guard_failed_at_runtime", "input_ids", 1, f"--seq 1:{N_POS}")
    assert "200" in d.cause


# ---- beyond the catalogue: data-dependent code (issue part 5) -------------------------------------
class TrimPadding(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        n = int(attention_mask.sum())  # a size read from tensor values
        return self.m(input_ids=input_ids[:, :n], use_cache=False).logits


def test_data_dependent_code(sdpa):
    e = raised(lambda: export(TrimPadding(sdpa.m), ids(1, 7), dynamic_shapes=seq_dims(Dim("seq", min=2, max=200))))
    d = check(diagnose(e), "data_dependent", fix=".item()")
    assert "int(attention_mask.sum())" in d.cause and d.retry is None


# ---- the text DESIGN.md quotes, fed to diagnose() on every version ---------------------------------
_SPEC = ("Constraints violated (seq_len)!\n  - You marked seq_len as dynamic but your code specialized it to be a "
         "constant ({n}).\nSuggested fixes:\n  seq_len = {n}\n")
_BUFFER = ("Constraints violated (seq)!\n  - Not all values of seq = L['input_ids'].size()[1] in the specified "
           "range seq <= 2048 satisfy the generated guard L['input_ids'].size()[1] != 1024.\n{more}"
           "Suggested fixes:\n  seq = Dim('seq', max=1024)\n")
_MORE = ("  - Not all values of seq = L['input_ids'].size()[1] in the specified range seq <= 2048 satisfy the "
         "generated guard 2 <= L['input_ids'].size()[1] and L['input_ids'].size()[1] <= 1024\n")
CATALOGUE_TEXT = [  # (row, exception with DESIGN's words, kind, (input, dim) or None, fix parts)
    (1, RuntimeError(_SPEC.format(n=1)), "specialized_constant", ("input_ids", 1), "--example-len"),
    (3, RuntimeError("ConstraintViolationError: 7 not in range [8, 1023]"), "example_outside_range",
     ("input_ids", 1), "--example-len 9"),
    (4, RuntimeError("cannot reshape tensor of 0 elements into shape [-1, 0]"), "min_zero", ("input_ids", 1),
     "--seq 1:"),
    (6, IndexError("index out of range in self"), "position_limit", ("input_ids", 1), "--seq 1:1024"),
    (6, RuntimeError("Gather ... out of data bounds"), "position_limit", ("input_ids", 1), "--seq 1:1024"),
    (7, RuntimeError(_BUFFER.format(more=_MORE)), "causal_mask_buffer", ("input_ids", 1),
     ("--attn sdpa", "--seq 1:1023")),
    (7, RuntimeError(_BUFFER.format(more="")), "causal_mask_buffer", ("input_ids", 1), "--attn sdpa"),
    (8, RuntimeError("Recompiling function forward in m.py:8\n    triggered by the following guard failure(s):\n"
                     "    - 0/0: 2 <= L['input_ids'].size()[1] <= 1023"), "recompile", ("input_ids", 1),
     "--seq 1:1023"),
    (9, RuntimeError("Constraints violated (b)!\n  - The values of b = L['attention_mask'].size()[1] and "
                     "a = L['input_ids'].size()[1] must always be equal.\nSuggested fixes:\n  b = a\n"),
     "shared_dim", ("attention_mask", 1), "--seq MIN:MAX"),
    (9, RuntimeError(_SPEC.format(n=7)), "shared_dim", ("input_ids", 1), "--seq MIN:MAX"),
    (10, RuntimeError("Found DynamicCache in output, which is not a known type"), "pytree_cache", None,
     "use_cache=False"),
    (11, TypeError("scaled_dot_product_attention(): argument 'is_causal' must be bool, not SymBool"),
     "onnx_symbool", ("input_ids", 1), "--example-len"),
    (12, RuntimeError("UnsupportedOperatorError: aten::diff"), "onnx_aten_diff", None, "attention_mask"),
    (13, IndexError("index out of range in self"), "position_limit", ("input_ids", 1), "--seq 1:"),
    (14, AssertionError("Guard failed: input_ids.size()[1] <= 1023"), "guard_failed_at_runtime",
     ("input_ids", 1), "--seq"),
    (14, RuntimeError("[executionContext.cpp::setInputShape] Error Code 3: API Usage Error (Parameter check "
                      "failed, condition: satisfyProfile Runtime dimension does not satisfy any optimization "
                      "profile.)"), "trt_profile", None, "--backend tensorrt"),
]


@pytest.mark.parametrize("row,exc,kind,where,fix", CATALOGUE_TEXT, ids=[f"row{r[0]}-{r[2]}" for r in CATALOGUE_TEXT])
def test_catalogue_text(row, exc, kind, where, fix):
    d = check(diagnose(exc, input_names=NAMES), kind, *(where or (None, None)), fix)
    assert str(exc).splitlines()[0][:20] not in d.fix  # a translation, not an echo


def test_catalogue_text_retry_only_for_non_bound_guards():
    bound = diagnose(RuntimeError(_BUFFER.format(more=_MORE)))
    only_ne = diagnose(RuntimeError(_BUFFER.format(more="")))
    assert bound.retry is None
    assert only_ne.retry == {"prefer_deferred_runtime_asserts_over_guards": True}
    assert bound.torch_suggestions == ["seq = Dim('seq', max=1024)"] and "fails again" in bound.cause


def test_guard_translates_torch_suggestion_into_flags():
    text = ("Constraints violated (seq)!\n  - Not all values of seq = L['args'][0][0].size()[1] in the specified "
            "range seq <= 1000 satisfy the generated guard L['args'][0][0].size()[1] <= 500\n"
            "Suggested fixes:\n  seq = Dim('seq', max=500)\n")
    d = diagnose(RuntimeError(text), input_names=NAMES, plan=make_plan(seq=(2, 1000), serve_seq=(1, 1000)))
    check(d, "guard_complex", "input_ids", 1, "--seq 1:500")
    assert d.retry is None


def test_sources_map_torch_names_to_inputs():
    text = ("L['args'][0][1].size()[1], L['kwargs']['attention_mask'].size()[0], L['input_ids'].size()[1], "
            "inputs['position_ids'].shape[1], input_ids.size()[1]")
    assert sources(text, NAMES) == [("attention_mask", 1), ("attention_mask", 0), ("input_ids", 1),
                                    ("position_ids", 1)]
    assert suggested_fixes("x\nSuggested fixes:\n  seq = 1\n  b = a\n\nThe error above") == ["seq = 1", "b = a"]


def test_unknown_error_and_export_error():
    assert diagnose(ValueError("something else entirely")) is None
    err = as_export_error(ValueError("something else\nsecond line"))
    assert isinstance(err, ExportError) and err.diagnosis is None
    assert "something else" in err.message and "second line" not in err.message and err.fix
    err = as_export_error(RuntimeError(_SPEC.format(n=1)), input_names=NAMES)
    assert err.diagnosis.kind == "specialized_constant" and "\n" not in str(err) and "--example-len" in err.fix


def test_complex_guard_is_retried_with_runtime_asserts_but_a_plain_bound_is_not():
    """CUDA fp32 sdpa adds an alignment guard (seen on an H200, torch 2.11): safe as a run-time assert."""
    from dynashape.planning.diagnose import RETRY_WITH_ASSERTS, diagnose

    complex_text = ("Constraints violated (seq)! \n  - Not all values of seq = L['input_ids'].size()[1] in the "
                    "specified range 2 <= seq <= 64 satisfy the generated guard "
                    "L['input_ids'].size()[1]*(8 + L['input_ids'].size()[1] - Mod(L['input_ids'].size()[1], 8)) > 1.")
    d = diagnose(RuntimeError(complex_text), input_names=["input_ids"])
    assert d is not None and d.retry == RETRY_WITH_ASSERTS
    bound_text = ("Constraints violated (seq)! \n  - Not all values of seq = L['input_ids'].size()[1] in the "
                  "specified range seq <= 2048 satisfy the generated guard 2 <= L['input_ids'].size()[1] and "
                  "L['input_ids'].size()[1] <= 1024.")
    d = diagnose(RuntimeError(bound_text), input_names=["input_ids"])
    assert d is not None and d.retry is None
