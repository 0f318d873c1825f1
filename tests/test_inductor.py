"""The inductor backend: one compiled graph serves the whole planned range, with no recompilation."""
import pytest
import torch
from torch._dynamo.utils import counters

from conftest import hf_logits, make_plan_for
from dynashape.backends import CompileSettings
from dynashape.engine import build_engine

pytestmark = [pytest.mark.integration]

SIZES = [(1, 1), (1, 2), (2, 2), (4, 4), (4, 64), (2, 63), (3, 17), (1, 64), (4, 1), (2, 3)]


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_whole_range_without_recompiling(tiny):
    torch._dynamo.reset()
    counters.clear()
    engine = build_engine(tiny, make_plan_for(tiny, "1:64", "1:4"), CompileSettings(backend="inductor"))
    after_build = _graphs()
    assert after_build in (1, 2)                 # once at the planned examples (twice if a cache clash retried)
    for b, t in SIZES:
        ids = torch.randint(0, 1000, (b, t))
        torch.testing.assert_close(engine(ids), hf_logits(tiny, ids), atol=1e-4, rtol=1e-4)
    assert _graphs() == after_build              # not one recompile anywhere in the range


def test_plain_mark_dynamic_from_one_is_the_trap_we_avoid(tiny):
    """Raw torch.compile with mark_dynamic(min=1): size 1 is outside the traced graph (0/1 specialisation)."""
    torch._dynamo.reset()
    counters.clear()
    model = torch.compile(lambda ids: tiny.model(input_ids=ids, use_cache=False).logits, backend="eager")
    ids = torch.randint(0, 1000, (1, 16))
    torch._dynamo.mark_dynamic(ids, 1, min=1, max=64)
    model(ids)
    first = _graphs()
    model(torch.randint(0, 1000, (1, 1)))        # length 1: torch compiles another graph
    assert _graphs() > first
