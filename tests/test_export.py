"""Real torch.export of GPT-2 per plan (integration: CPU, random weights)."""
import pytest
import torch

from conftest import hf_logits, make_plan_for
from dynashape.graphs import check_program, dynamic_shapes, example_inputs, export_plan, program_sizes

pytestmark = pytest.mark.integration


def test_exported_program_has_the_planned_ranges_and_shared_dims(tiny):
    plan = make_plan_for(tiny, "1:256", "1:8")
    ep = export_plan(tiny.model, plan).program
    assert program_sizes(ep, plan) == {"batch": (2, 8), "seq": (2, 256)}
    assert [f.status for f in check_program(ep, plan)] == ["OK"]
    shapes = dynamic_shapes(plan)
    assert shapes["input_ids"][1] is shapes["attention_mask"][1]   # one shared Dim object
    # the program runs at both ends of its range and matches the eager model
    for b, t in [(2, 2), (8, 256), (3, 17)]:
        ids = torch.randint(0, 1000, (b, t))
        out = ep.module()(input_ids=ids, attention_mask=torch.ones_like(ids))
        torch.testing.assert_close(out, hf_logits(tiny, ids), atol=1e-4, rtol=1e-4)


def test_examples_are_the_planned_ones(tiny):
    plan = make_plan_for(tiny, "1:256", "1:8")
    ex = example_inputs(plan)
    assert ex["input_ids"].shape == (plan.examples["batch"], plan.examples["seq"])
    assert ex["attention_mask"].shape == ex["input_ids"].shape


def test_user_example_outside_the_range_is_replaced_and_export_succeeds(tiny):
    # raw torch: example 7 with Dim(min=8) -> ConstraintViolationError; the planner replaces it
    plan = make_plan_for(tiny, "8:200", example_len=7)
    ep = export_plan(tiny.model, plan).program
    assert program_sizes(ep, plan)["seq"] == (8, 200)


def test_static_batch_exports_static(tiny):
    plan = make_plan_for(tiny, "1:64", "1")
    ep = export_plan(tiny.model, plan).program
    assert program_sizes(ep, plan) == {"batch": 1, "seq": (2, 64)}


def test_full_gpt2_length_1024_exports_whatever_the_transformers_version(gpt2):
    """transformers <= 5.1 eager attention guards != 1024; the planner picks sdpa there."""
    plan = make_plan_for(gpt2, "1:1024", attn="eager")
    if plan.attn_implementation != "eager":
        assert next(f for f in plan.findings if f.rule == "attention").status == "ADJUSTED"
    from dynashape.models import load_model

    lm = load_model("random:gpt2", plan.attn_implementation)
    ep = export_plan(lm.model, plan).program
    assert program_sizes(ep, plan)["seq"] == (2, 1024)
    ids = torch.randint(0, 50257, (1, 1024))
    out = ep.module()(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(out, hf_logits(lm, ids), atol=2e-4, rtol=1e-4)


def test_a_complex_guard_is_retried_once_with_runtime_asserts_and_recorded(tiny, monkeypatch):
    """The first export raises the CUDA fp32 alignment guard (text as seen on an H200); the retry must pass
    prefer_deferred_runtime_asserts_over_guards and the plan must say so."""
    import dynashape.graphs as ex

    real, calls = ex._export_once, []
    text = ("Constraints violated (seq)! \n  - Not all values of seq = L['input_ids'].size()[1] in the specified "
            "range 2 <= seq <= 64 satisfy the generated guard "
            "L['input_ids'].size()[1]*(8 + L['input_ids'].size()[1] - Mod(L['input_ids'].size()[1], 8)) > 1.")

    def first_fails(module, kwargs, shapes, extra):
        calls.append(dict(extra))
        if len(calls) == 1:
            raise RuntimeError(text)
        return real(module, kwargs, shapes, extra)

    monkeypatch.setattr(ex, "_export_once", first_fails)
    plan = make_plan_for(tiny, "1:64")
    res = export_plan(tiny.model, plan)
    assert res.retried and calls == [{}, {"prefer_deferred_runtime_asserts_over_guards": True}]
    assert plan.findings[-1].rule == "export-retry" and "retried once" in plan.findings[-1].message
    assert program_sizes(res.program, plan)["seq"] == (2, 64)


def test_a_plain_bound_is_not_retried(tiny, monkeypatch):
    import dynashape.graphs as ex
    from dynashape.errors import ExportError

    def always_fails(module, kwargs, shapes, extra):
        raise RuntimeError("Constraints violated (seq)! \n  - Not all values of seq = L['input_ids'].size()[1] in "
                           "the specified range seq <= 64 satisfy the generated guard L['input_ids'].size()[1] <= 63.")

    monkeypatch.setattr(ex, "_export_once", always_fails)
    with pytest.raises(ExportError) as info:
        export_plan(tiny.model, make_plan_for(tiny, "1:64"))
    assert "Fix:" in info.value.one_line() and "\n" not in info.value.one_line()
