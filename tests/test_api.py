"""The library without the CLI: plan, compile (and save), load in a fresh process, generate, verify."""
import json
import os
import subprocess
import sys

import pytest
import torch

import dynashape

pytestmark = pytest.mark.integration


def test_plan_compile_load_generate_verify_through_the_public_api(tmp_path, tiny):
    p = dynashape.plan("random:tiny", seq="1:32", batch="1:2", backend="inductor")
    assert p.ok and p.pad_to["seq"] == {1: 2} and list(p.graphs) == ["prefill", "decode"]
    engine = dynashape.compile("random:tiny", seq="1:32", batch="1:2", backend="eager", out=tmp_path / "e")
    ids = [5, 6, 7]
    with torch.no_grad():
        want = tiny.model.generate(torch.tensor([ids]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)[0, 3:].tolist()
    assert engine.generate([ids], 6, ignore_eos=True) == [want]
    code = ("import sys, json, dynashape; e = dynashape.load(sys.argv[1]); "
            "print(json.dumps(e.generate([[5, 6, 7]], 6, ignore_eos=True)))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "e")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.path.abspath("src")))
    assert proc.returncode == 0 and json.loads(proc.stdout) == [want], proc.stderr
    report = dynashape.verify(tmp_path / "e", dynashape.VerifySettings(lengths=[1, 32], decode_steps=4))
    assert report.ok and {r.check for r in report.results} == {"prefill", "decode", "greedy"}


def test_compile_refuses_what_the_plan_refuses_before_any_work(tmp_path):
    with pytest.raises(dynashape.PlanError, match="n_positions 256"):
        dynashape.compile("random:tiny", seq="1:300", backend="eager", out=tmp_path / "e")
    with pytest.raises(dynashape.PlanError, match="--kernels fused was asked for"):
        dynashape.compile("random:tiny", seq="1:30", backend="eager", kernels="fused")
    assert not (tmp_path / "e").exists()


def test_a_loaded_model_is_planned_from_its_own_config(tmp_path):
    """compile(..., loaded=lm) builds lm: the plan must follow lm's config, not the preset its name
    came from (a 1-layer model named random:tiny planned as 2 layers passed the wrong cache count)."""
    from dynashape.models.load import LoadedModel, model_from_config, preset_config

    cfg = preset_config("tiny")
    cfg.n_layer = 1
    lm = LoadedModel("random:tiny", "random", model_from_config(cfg).eval(), cfg)
    assert dynashape.plan(lm, seq="1:32").model["n_layer"] == 1
    assert dynashape.plan("random:tiny", seq="1:32").model["n_layer"] == preset_config("tiny").n_layer != 1
    engine = dynashape.compile("random:tiny", seq="1:32", batch="1:2", backend="eager", loaded=lm)
    ids = [5, 6, 7]
    with torch.no_grad():
        want = lm.model.generate(torch.tensor([ids]), max_new_tokens=5, min_new_tokens=5, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, 3:].tolist()
    assert engine.plan.model["n_layer"] == 1 and engine.generate([ids], 5, ignore_eos=True) == [want]


def test_public_names_resolve():
    for name in dynashape.__all__:
        assert getattr(dynashape, name) is not None


def test_submodules_are_not_shadowed_by_public_names():
    import types

    import dynashape.engine  # noqa: F401  (a public name must never replace a subpackage)
    from dynashape import engine

    assert isinstance(engine, types.ModuleType)
    submodules = {"api", "cli", "engine", "errors", "graphs", "planning", "runtime", "verification", "bench", "models",
                  "backends", "serve"}
    assert not set(dynashape.__all__) & submodules
