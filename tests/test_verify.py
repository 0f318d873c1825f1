"""verify: the default sweep, decode to the last cache position, greedy tokens, and that it really
catches an engine that disagrees with eager in each of its three checks."""
import pytest
import torch

from dynashape import api
from dynashape.errors import VerifyError
from dynashape.planning.shapes import Range
from dynashape.verification import VerifySettings, compare, default_sizes, sweep_points, verify_engine


def test_default_sizes_hold_boundaries_padded_powers_of_two_and_randoms():
    sizes = default_sizes(Range(1, 1024, 100), padded=[1], n_random=3, seed=0)
    for must in (1, 2, 100, 1023, 1024, 63, 64, 65, 511, 512, 513):
        assert must in sizes
    assert all(1 <= s <= 1024 for s in sizes) and sizes == sorted(set(sizes))
    assert len(set(sizes) - set(default_sizes(Range(1, 1024, 100), [1], n_random=0))) >= 1  # randoms added
    assert default_sizes(Range(1, 1024), [1], seed=0) == default_sizes(Range(1, 1024), [1], seed=0)


def test_default_sizes_of_a_static_dim():
    assert default_sizes(Range(4, 4), padded=[]) == [4]


@pytest.fixture(scope="module")
def engine(tiny):
    return api.compile("random:tiny", seq="1:64", batch="1:4", backend="eager", loaded=tiny)


@pytest.mark.integration
def test_sweep_covers_corners_and_both_sweeps(engine):
    pts = sweep_points(engine, VerifySettings())
    for corner in [(1, 1), (1, 64), (4, 1), (4, 64)]:
        assert corner in pts
    assert {b for b, _ in pts} == {1, 2, 3, 4}


@pytest.mark.integration
def test_verify_passes_a_correct_engine_in_all_three_checks(engine):
    report = verify_engine(engine, VerifySettings())
    assert report.ok and len(report.of("prefill")) >= 20
    assert all(r.max_abs_err < 1e-4 and r.top1 == 1.0 for r in report.of("prefill") + report.of("decode"))
    decode = report.of("decode")
    assert len(decode) >= 24 and max(r.seq for r in decode) == 63          # the last cache position
    greedy = report.of("greedy")
    assert greedy and all(r.top1 == 1.0 for r in greedy)                    # fp32: HF's tokens exactly
    data = report.to_json()
    assert data["ok"] and all(data[c]["ok"] and data[c]["points"] for c in ("prefill", "decode", "greedy"))


def _break(engine, graph, when):
    """Wrap one graph of the engine so its logits drift when ``when(*inputs)`` holds, as a broken kernel would."""
    good = engine.runners[graph]

    def drifting(*inputs):
        out = good(*inputs)
        return out + when(*inputs) * 0.05
    engine.runners[graph] = drifting
    engine._generator = None                                 # rebuilt over the broken graph
    return good


@pytest.mark.integration
@pytest.mark.parametrize("graph,when,check", [
    ("prefill", lambda idx, last, *rest: float(idx.shape[1] > 40), "prefill"),
    ("decode", lambda tok, pos, *rest: float(pos.max() > 50), "decode"),
])
def test_verify_fails_an_engine_that_disagrees(engine, graph, when, check):
    good = _break(engine, graph, when)
    try:
        report = verify_engine(engine, VerifySettings())
    finally:
        engine.runners[graph] = good
        engine._generator = None
    assert not report.ok
    # a uniform shift of the logits keeps every argmax: only the logits check of that graph fails
    assert {r.check for r in report.failures} == {check}


@pytest.mark.integration
def test_requested_sizes_outside_the_range_are_refused(engine):
    with pytest.raises(VerifyError, match="seq range 1..64") as e:
        verify_engine(engine, VerifySettings(lengths=[65]))
    assert "dynashape compile random:tiny --seq 1:65" in e.value.fix


def test_compare_forgives_a_flip_between_tied_tokens_but_not_a_wrong_pick():
    want = torch.tensor([[[5.0, 4.9995, 0.0]]])
    tied_flip = torch.tensor([[[4.9995, 5.0, 0.0]]])
    r = compare("prefill", tied_flip, want, rtol=1e-2, min_top1=0.99, seconds=0.0, sizes=(1, 1, 1, 1))
    assert r.top1 == 0.0 and r.top1_within_tol == 1.0 and r.ok
    wrong = torch.tensor([[[5.0, 4.9995, 5.01]]])      # picks the token the reference scores 0.0
    r = compare("prefill", wrong, want, rtol=1e-2, min_top1=0.99, seconds=0.0, sizes=(1, 1, 1, 1))
    assert not r.ok and r.top1_within_tol == 0.0
