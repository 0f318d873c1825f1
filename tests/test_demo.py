"""`dynashape demo` end to end on a small model (the README's first command runs it on random:gpt2)."""
import pytest

from dynashape.cli import main

pytestmark = pytest.mark.integration


def test_demo_tells_the_whole_story(tmp_path, capsys):
    out = tmp_path / "engines" / "demo"
    assert main(["demo", "--model", "random:tiny", "--backend", "eager", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dynashape says:" in text                        # 1. the trap, diagnosed
    assert "OK        cuda-graphs" in text and "plan      generation engine" in text    # 2. doctor
    assert (out / "engine.json").is_file()                  # 3. compile wrote an engine,
    assert "s to the first tokens (no compiling)" in text   #    loaded by a fresh process
    assert "points match the eager model (prefill" in text and "decode 16/16" in text   # 4. verify
    assert "identical, token for token" in text             # 5. generate vs HF
    assert text.rstrip().splitlines()[-1].startswith("done")


def test_demo_replaces_its_own_engine(tmp_path, capsys):
    out = tmp_path / "demo"
    for _ in range(2):
        assert main(["demo", "--model", "random:tiny", "--backend", "eager", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
