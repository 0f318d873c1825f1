"""Shared fixtures: random GPT-2 models (no download) and plans built with the real planner."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


@pytest.fixture(scope="session")
def tiny():
    from dynashape.models import load_model

    return load_model("random:tiny")


@pytest.fixture(scope="session")
def gpt2():
    from dynashape.models import load_model

    return load_model("random:gpt2")


def make_plan_for(lm, seq: str, batch: str = "1", **kw):
    from dynashape.planning.rules import PlanSettings, make_plan
    from dynashape.planning.shapes import parse_range

    return make_plan(lm.info(), PlanSettings(seq=parse_range(seq, "seq"), batch=parse_range(batch, "batch"), **kw))


def hf_logits(lm, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=ids, use_cache=False).logits


# ---- engine directories: copies, edits, the one-line error --------------------------------------

def copy_engine(src, tmp_path):
    import shutil

    dst = tmp_path / src.parent.name
    shutil.copytree(src, dst)
    return dst


def rehash(directory) -> None:
    """Update engine.json's checksums, as a build by that other version would have written them."""
    import json

    from dynashape.engine.store import sha256_path

    meta = json.loads((directory / "engine.json").read_text())
    for art in meta["artifacts"].values():
        art["sha256"] = sha256_path(directory / art["file"])
    (directory / "engine.json").write_text(json.dumps(meta))


def one_line(err) -> str:
    """The text of a raised DynashapeError: one line with a fix."""
    text = str(err.value)
    assert "\n" not in text and "Fix:" in text, text
    return text


def assert_widened_plan_is_refused(directory, backend: str) -> None:
    """Widen plan.json's seq range by hand: the artifact, built for the old plan, must refuse it."""
    import json

    import pytest

    from dynashape.engine import Engine
    from dynashape.errors import EngineError

    plan = json.loads((directory / "plan.json").read_text())
    plan["graph"]["seq"]["max"] = plan["serve"]["seq"]["max"] = 128
    (directory / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(EngineError) as err:
        Engine.load(directory)
    text = one_line(err)
    assert f"plan.json does not match its {backend} artifact" in text and "seq 2:64:16" in text
    assert "seq 2:128:16" in text
