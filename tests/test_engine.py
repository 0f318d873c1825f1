"""Engine: input checks against the plan, exact padding, backends, save/load (atomic, fresh process)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import hf_logits, make_plan_for
from dynashape.backends import CompileSettings
from dynashape.engine import Engine, build_engine
from dynashape.errors import BackendError, EngineError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def eager_engine(tiny):
    return build_engine(tiny, make_plan_for(tiny, "1:64", "1:4"), CompileSettings(backend="eager"), out="E")


@pytest.mark.parametrize("b,t", [(1, 1), (1, 2), (2, 1), (4, 64), (3, 33), (1, 64)])
def test_padded_and_unpadded_sizes_match_the_eager_model_exactly(tiny, eager_engine, b, t):
    ids = torch.randint(0, 1000, (b, t))
    out = eager_engine(ids)
    assert out.shape == (b, t, 1000)
    torch.testing.assert_close(out, hf_logits(tiny, ids), atol=1e-5, rtol=1e-5)


def test_padding_keeps_a_user_mask(tiny, eager_engine):
    ids = torch.randint(0, 1000, (1, 1))
    mask = torch.ones_like(ids)
    torch.testing.assert_close(eager_engine(ids, mask), hf_logits(tiny, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad,fragment", [
    (torch.randint(0, 1000, (5, 3)), "batch 5 is outside this engine's batch range 1..4"),
    (torch.randint(0, 1000, (1, 65)), "seq 65 is outside this engine's seq range 1..64"),
    (torch.full((1, 3), 1000), "token id 1000 is outside the vocabulary"),
    (torch.full((1, 3), -1), "token id -1"),
    (torch.zeros(1, 3), "dtype float32"),
    (torch.zeros(3, dtype=torch.long), "rank 1"),
    ([[1, 2]], "must be a tensor"),
])
def test_calls_outside_the_plan_raise_our_error(eager_engine, bad, fragment):
    with pytest.raises(EngineError) as info:
        eager_engine(bad)
    assert fragment in info.value.one_line() and "Fix:" in info.value.one_line()


def test_out_of_range_error_names_the_rebuild_command(eager_engine):
    with pytest.raises(EngineError) as info:
        eager_engine(torch.randint(0, 1000, (1, 100)))
    assert "dynashape compile random:tiny --seq 1:100 --batch 1:4 --backend eager" in info.value.fix


def test_mask_of_another_shape_is_refused(eager_engine):
    with pytest.raises(EngineError, match="attention_mask shape"):
        eager_engine(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))


def test_unknown_backend_is_refused(tiny):
    with pytest.raises(BackendError, match="unknown backend"):
        build_engine(tiny, make_plan_for(tiny, "1:8"), CompileSettings(backend="tvm"))


def test_save_then_load_in_a_fresh_process_gives_the_same_logits(eager_engine, tmp_path):
    out = tmp_path / "eng"
    eager_engine.save(out)
    ids = torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(1))
    torch.save(ids, tmp_path / "ids.pt")
    code = ("import sys, torch; from dynashape.engine import Engine;"
            f"e = Engine.load({str(out)!r}); torch.save(e(torch.load({str(tmp_path / 'ids.pt')!r})), sys.argv[1])")
    env = dict(os.environ, PYTHONPATH=os.path.abspath("src"))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.pt")], check=True, env=env)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), eager_engine(ids), atol=0, rtol=0)
    meta = json.loads((out / "engine.json").read_text())
    assert meta["backend"] == "eager" and set(meta["artifacts"]) == {"program"}


def test_save_refuses_existing_without_force_and_replaces_with_force(eager_engine, tmp_path):
    out = tmp_path / "eng"
    eager_engine.save(out)
    stamp = (out / "engine.json").read_text()
    with pytest.raises(EngineError, match="already exists"):
        eager_engine.save(out)
    assert (out / "engine.json").read_text() == stamp
    eager_engine.save(out, force=True)
    assert Engine.load(out).backend == "eager"
    assert [p.name for p in tmp_path.iterdir()] == ["eng"]   # no temp or old directories left


def test_force_never_replaces_a_directory_that_is_not_an_engine(eager_engine, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EngineError, match="not a dynashape engine"):
        eager_engine.save(tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_save_leaves_nothing_and_keeps_the_old_engine(eager_engine, tmp_path, monkeypatch):
    out = tmp_path / "eng"
    eager_engine.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import dynashape.backends.eager as eager_backend

    def broken_save(runner, directory):
        (directory / "half.bin").write_bytes(b"x" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(eager_backend, "save", broken_save)
    with pytest.raises(OSError):
        eager_engine.save(out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["eng"]


@pytest.mark.parametrize("damage,fragment", [
    (lambda d: (d / "engine.json").write_text("{not json"), "engine.json is corrupt"),
    (lambda d: (d / "engine.json").unlink(), "no engine.json"),
    (lambda d: (d / "program.pt2").unlink(), "missing its program artifact"),
    (lambda d: (d / "program.pt2").write_bytes((d / "program.pt2").read_bytes()[:1000]), "checksum"),
    (lambda d: _edit_meta(d, format=99), "engine format 99"),
    (lambda d: _edit_meta(d, dynashape="9.9.0"), "built by dynashape 9.9.0"),
    (lambda d: _edit_meta(d, backend="tvm"), "unknown backend"),
    (lambda d: (d / "plan.json").unlink(), "missing plan.json"),
])
def test_damaged_engine_directories_are_refused_with_a_rebuild_hint(eager_engine, tmp_path, damage, fragment):
    out = tmp_path / "eng"
    eager_engine.save(out)
    damage(out)
    with pytest.raises((EngineError, BackendError)) as info:
        Engine.load(out)
    assert fragment in info.value.one_line() and "Fix:" in info.value.one_line()


def _edit_meta(d, **changes):
    meta = json.loads((d / "engine.json").read_text())
    meta.update(changes)
    (d / "engine.json").write_text(json.dumps(meta))


def test_missing_engine_directory_is_refused(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        Engine.load(tmp_path / "nope")


def test_reference_model_holds_the_engine_weights(tiny, eager_engine):
    ids = torch.randint(0, 1000, (2, 5))
    ref = eager_engine.reference_model()
    torch.testing.assert_close(ref(input_ids=ids).logits, hf_logits(tiny, ids), atol=0, rtol=0)
