"""verify: the default sweep, and that it really catches an engine that disagrees with eager."""
import pytest
import torch

from conftest import make_plan_for
from dynashape.backends import CompileSettings
from dynashape.engine import build_engine
from dynashape.errors import VerifyError
from dynashape.planning.shapes import Range
from dynashape.verify import VerifySettings, default_sizes, sweep_points, verify_engine


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
    return build_engine(tiny, make_plan_for(tiny, "1:64", "1:4"), CompileSettings(backend="eager"), out="E")


@pytest.mark.integration
def test_sweep_covers_corners_and_both_sweeps(engine):
    pts = sweep_points(engine, VerifySettings())
    for corner in [(1, 1), (1, 64), (4, 1), (4, 64)]:
        assert corner in pts
    assert {b for b, _ in pts} == {1, 2, 3, 4}


@pytest.mark.integration
def test_verify_passes_a_correct_engine(engine):
    report = verify_engine(engine, VerifySettings())
    assert report.ok and len(report.results) >= 20
    assert all(r.max_abs_err < 1e-4 and r.top1 == 1.0 for r in report.results)
    padded = [r for r in report.results if r.seq == 1]
    assert padded and all(r.graph_seq == 2 for r in padded)


@pytest.mark.integration
def test_verify_fails_an_engine_that_disagrees(engine):
    good = engine.runner

    def drifting(**inputs):   # wrong only at longer lengths, as a broken kernel would be
        out = good(**inputs)
        return out + (inputs["input_ids"].shape[1] > 40) * 0.01

    engine.runner = drifting
    try:
        report = verify_engine(engine, VerifySettings())
    finally:
        engine.runner = good
    assert not report.ok
    assert {r.seq for r in report.failures} == {r.seq for r in report.results if r.seq > 40}


@pytest.mark.integration
def test_requested_sizes_outside_the_range_are_refused(engine):
    with pytest.raises(VerifyError, match="seq range 1..64"):
        verify_engine(engine, VerifySettings(lengths=[65]))


def test_compare_forgives_a_flip_between_tied_tokens_but_not_a_wrong_pick():
    from dynashape.verify import compare

    want = torch.tensor([[[5.0, 4.9995, 0.0]]])
    tied_flip = torch.tensor([[[4.9995, 5.0, 0.0]]])
    r = compare(tied_flip, want, rtol=1e-2, min_top1=0.99, seconds=0.0, sizes=(1, 1, 1, 1))
    assert r.top1 == 0.0 and r.top1_within_tol == 1.0 and r.ok
    wrong = torch.tensor([[[5.0, 4.9995, 5.01]]])      # picks the token the reference scores 0.0
    r = compare(wrong, want, rtol=1e-2, min_top1=0.99, seconds=0.0, sizes=(1, 1, 1, 1))
    assert not r.ok and r.top1_within_tol == 0.0
