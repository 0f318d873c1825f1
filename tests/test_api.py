"""The library without the CLI: plan, compile, call, save, load."""
import pytest
import torch

import dynashape

pytestmark = pytest.mark.integration


def test_plan_and_compile_through_the_public_api(tmp_path, tiny):
    p = dynashape.plan("random:tiny", seq="1:32", batch="1:2")
    assert p.ok and p.pad_to["seq"] == {1: 2}
    engine = dynashape.compile("random:tiny", seq="1:32", batch="1:2", backend="eager")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        want = tiny.model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(engine(ids), want, atol=1e-5, rtol=1e-5)
    engine.save(tmp_path / "e")
    torch.testing.assert_close(dynashape.Engine.load(tmp_path / "e")(ids), want, atol=1e-5, rtol=1e-5)


def test_compile_refuses_what_the_plan_refuses():
    with pytest.raises(dynashape.PlanError, match="n_positions 256"):
        dynashape.compile("random:tiny", seq="1:300", backend="eager")


def test_public_names_resolve():
    for name in dynashape.__all__:
        assert getattr(dynashape, name) is not None


def test_submodules_are_not_shadowed_by_public_names():
    import types

    import dynashape.engine  # noqa: F401  (a public name must never replace a subpackage)
    from dynashape import engine

    assert isinstance(engine, types.ModuleType)
    submodules = {"api", "cli", "engine", "errors", "graphs", "planning", "runtime", "verify", "bench", "models",
                  "backends", "serve"}
    assert not set(dynashape.__all__) & submodules
