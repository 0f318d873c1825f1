"""Every planning rule, on plain data (no export): fast."""
import pytest

from conftest import make_plan_for
from dynashape.planning.rules import PlanSettings, make_plan
from dynashape.planning.shapes import Range

GPT2 = {"name": "gpt2", "n_positions": 1024, "vocab_size": 50257, "n_layer": 12, "n_head": 12, "n_embd": 768}
NEW = {"torch": "2.13.0", "transformers": "5.24.0"}
OLD = {"torch": "2.13.0", "transformers": "4.46.3"}


def plan(seq, batch=Range(1, 1), versions=NEW, **kw):
    return make_plan(GPT2, PlanSettings(seq=seq, batch=batch, **kw), versions)


def finding(p, rule):
    return next(f for f in p.findings if f.rule == rule)


def test_max_above_n_positions_is_refused_naming_the_limit():
    p = plan(Range(1, 2048))
    f = finding(p, "model-limit")
    assert not p.ok and f.status == "REFUSED"
    assert "1024" in f.message and f.fix == "--seq 1:1024"


def test_max_at_n_positions_is_served():
    p = plan(Range(1, 1024))
    assert p.ok and finding(p, "model-limit").status == "OK"
    assert p.serve["seq"] == Range(1, 1024)


def test_min_one_is_compiled_from_two_and_padded():
    p = plan(Range(1, 1024), Range(1, 8))
    for dim in ("seq", "batch"):
        assert p.graph[dim].min == 2
        assert p.pad_to[dim] == {1: 2}
        assert finding(p, f"{dim}-specialisation").status == "ADJUSTED"
    assert p.graph["seq"].max == 1024 and p.graph["batch"].max == 8
    assert p.graph_size("seq", 1) == 2 and p.graph_size("seq", 5) == 5


def test_static_size_one_needs_no_padding():
    p = plan(Range(2, 64), Range(1, 1))
    assert p.graph["batch"] == Range(1, 1) and "batch" not in p.pad_to
    assert p.examples["batch"] == 1
    assert finding(p, "batch-specialisation").status == "OK"


def test_range_one_to_two_becomes_static_two_with_padding():
    p = plan(Range(1, 2))
    assert p.graph["seq"].static and p.graph["seq"].min == 2
    assert p.pad_to["seq"] == {1: 2}


def test_examples_are_strictly_inside_at_least_two_and_distinct():
    p = plan(Range(1, 1024), Range(1, 8))
    for dim in ("seq", "batch"):
        g, ex = p.graph[dim], p.examples[dim]
        assert g.min < ex < g.max and ex >= 2
    assert p.examples["seq"] != p.examples["batch"]


def test_examples_stay_distinct_when_ranges_overlap():
    p = plan(Range(2, 4), Range(2, 4))
    assert p.examples["seq"] != p.examples["batch"]
    assert all(2 <= v <= 4 for v in p.examples.values())


@pytest.mark.parametrize("given,why", [
    (7, "outside the graph's range 8..1023"),
    (1, "specialised to a constant"),
    (8, "boundary"),
])
def test_bad_user_example_is_explained_and_replaced(given, why):
    p = plan(Range(8, 1023), example_len=given)
    f = finding(p, "seq-example")
    assert f.status == "ADJUSTED" and why in f.message
    assert 8 < p.examples["seq"] < 1023
    assert f.fix == f"--example-len {p.examples['seq']}"


def test_good_user_example_is_kept():
    p = plan(Range(8, 1023), example_len=100)
    assert p.examples["seq"] == 100 and finding(p, "seq-example").status == "OK"


def test_example_equal_to_the_other_dims_example_is_replaced():
    p = plan(Range(2, 64), Range(2, 8), example_batch=5, example_len=5)
    assert p.examples["batch"] == 5 and p.examples["seq"] != 5
    assert "equals another dimension's example" in finding(p, "seq-example").message


def test_inputs_share_one_batch_and_one_seq_dimension():
    p = plan(Range(1, 64), Range(1, 4))
    assert [i.name for i in p.inputs] == ["input_ids", "attention_mask"]
    assert all(i.dims == ["batch", "seq"] for i in p.inputs)
    assert finding(p, "shared-dims").status == "OK"


def test_use_cache_is_off_and_the_reason_recorded():
    p = plan(Range(1, 64))
    assert p.use_cache is False
    assert "DynamicCache" in finding(p, "use-cache").message


def test_old_transformers_eager_attention_at_full_length_switches_to_sdpa():
    p = plan(Range(1, 1024), versions=OLD, attn="eager")
    f = finding(p, "attention")
    assert f.status == "ADJUSTED" and p.attn_implementation == "sdpa"
    assert "!= 1024" in f.message


def test_old_transformers_eager_attention_below_the_limit_is_kept():
    p = plan(Range(1, 1023), versions=OLD, attn="eager")
    assert p.attn_implementation == "eager" and finding(p, "attention").status == "OK"


def test_new_transformers_keeps_eager_attention():
    p = plan(Range(1, 1024), versions=NEW, attn="eager")
    assert p.attn_implementation == "eager"


def test_opt_defaults_to_the_example_and_user_opt_is_kept():
    assert plan(Range(1, 1024)).graph["seq"].opt == plan(Range(1, 1024)).examples["seq"]
    p = plan(Range(1, 1024, 128))
    assert p.graph["seq"].opt == 128 and p.examples["seq"] == 128


def test_plan_records_versions_and_model(tiny):
    p = make_plan_for(tiny, "1:256")
    assert set(p.versions) >= {"torch", "transformers"}
    assert p.model["n_positions"] == 256
