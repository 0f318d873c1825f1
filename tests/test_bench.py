"""dynashape bench on the CPU with tiny sizes: an engine (loaded, or compiled in memory) against
Hugging Face: the JSON schema, the physics, the speed-up, the files."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dynashape.bench.__main__ import main  # noqa: E402
from dynashape.bench.generate import BenchSettings, add_speedups, decode_bytes, run_bench, write_results  # noqa: E402
from dynashape.bench.report import format_table  # noqa: E402
from dynashape.errors import GenerateError  # noqa: E402

RECORD_KEYS = {"system", "batch", "prompt_len", "new_tokens", "ttft_ms", "tpot_ms_median", "tpot_ms_p90",
               "tokens_per_s", "gbps", "compile_s", "peak_mem_gb", "floor_ms", "floor_share"}


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    from dynashape import api

    out = tmp_path_factory.mktemp("bench") / "engine"
    api.compile("random:tiny", seq="1:32", batch="1:3", backend="eager", out=out)
    return out


@pytest.fixture(scope="module")
def result(engine_dir):
    s = BenchSettings(target=str(engine_dir), dtype="float32", device="cpu", batches=(1, 3), prompt_lens=(2, 9),
                      new_tokens=6, repeats=2, command="pytest bench smoke")
    return run_bench(s)


def test_json_has_machine_facts_engine_times_and_a_record_per_system_and_size(result, engine_dir):
    for key in ("gpu", "torch", "transformers", "dtype", "copy_gbps", "command"):
        assert key in result
    assert result["copy_gbps"] > 0 and result["command"] == "pytest bench smoke"
    e = result["engine"]
    assert e["source"] == "loaded" and e["path"] == str(engine_dir) and e["backend"] == "eager"
    assert e["load_s"] > 0 and e["plan"]["cache_slots"] == 4
    runs = result["runs"]
    assert len(runs) == 3 * 2 * 2
    for r in [r for r in runs if r["system"] in ("dynashape", "hf_eager")]:
        assert RECORD_KEYS <= set(r), set(RECORD_KEYS) - set(r)
        assert r["made_tokens"] == 6                         # EOS ignored: the whole budget every time
        assert r["ttft_ms"] > 0 and r["gbps"] > 0 and r["tokens_per_s"] > 0 and r["compile_s"] >= 0
        assert 0 < r["tpot_ms_median"] <= r["tpot_ms_p90"]
        step_mean_ms = r["batch"] * 1e3 / r["decode_tokens_per_s"]        # the mean step the shares use
        assert r["floor_share"] == pytest.approx(r["floor_ms"] / step_mean_ms, rel=1e-3, abs=5e-5)   # 5-decimal rounding
    for r in runs:
        if r["system"] == "dynashape":                       # fp32: our tokens are HF's top-1 every step
            assert r["top1_agreement_vs_hf"] == 1.0
    static = [r for r in runs if r["system"] == "hf_static_compile"]
    assert static and all("needs CUDA" in r["skipped"] for r in static)   # degrades with a reason
    json.dumps(result)


def test_decode_bytes_counts_weights_once_and_only_kv_in_use():
    m = {"n_layer": 2, "n_embd": 8}
    per_pos = 2 * 2 * 8 * 2                                 # K+V, 2 layers, 8 wide, fp16
    # two rows of length 3 and 5, two steps: step 0 reads 4 + 6 positions, step 1 reads 5 + 7
    assert decode_bytes(1000, m, 2, [3, 5], 2) == 2 * 1000 + per_pos * (4 + 6 + 5 + 7)


def test_speedup_compares_the_same_size_against_hf_static():
    runs = [dict(system="hf_static_compile", batch=1, prompt_len=7, tpot_ms_median=2.0),
            dict(system="dynashape", batch=1, prompt_len=7, tpot_ms_median=0.25),
            dict(system="dynashape", batch=8, prompt_len=7, tpot_ms_median=0.5)]
    add_speedups(runs)
    assert runs[1]["speedup_vs_hf_static"] == 8.0 and "speedup_vs_hf_static" not in runs[2]


def test_write_results_is_atomic_and_plots(result, tmp_path):
    j, p = tmp_path / "r.json", tmp_path / "r.png"
    write_results(result, str(j), str(p))
    assert json.loads(j.read_text())["runs"] == result["runs"]
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.png"]           # no temp files left


def test_table_lists_every_system(result):
    table = format_table(result)
    for system in ("dynashape", "hf_eager", "hf_static_compile"):
        assert system in table
    assert "floor%" in table and "needs CUDA" in table and "engine eager (loaded" in table


def test_bad_settings_are_refused():
    with pytest.raises(GenerateError, match="unknown bench system 'vllm'"):
        BenchSettings(systems=("vllm",))
    with pytest.raises(GenerateError, match="new tokens >= 2"):
        BenchSettings(new_tokens=1)


def test_main_compiles_a_model_in_memory_writes_json_png_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "m"
    rc = main(["--target", "random:tiny", "--device", "cpu", "--dtype", "float32", "--backend", "eager",
               "--batches", "2", "--prompt-lens", "4", "--new-tokens", "3", "--systems", "dynashape",
               "--repeats", "1", "--out", str(out)])
    assert rc == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["command"].startswith("python -m dynashape.bench --target random:tiny")
    assert data["engine"]["source"] == "compiled in memory" and data["engine"]["build_s"] > 0
    assert [r["system"] for r in data["runs"]] == ["dynashape"] and (tmp_path / "m.png").exists()
    assert "dynashape" in capsys.readouterr().out


def test_main_reports_bad_input_in_one_line(capsys, tmp_path):
    assert main(["--target", "random:tiny", "--device", "cpu", "--dtype", "float8"]) == 2
    assert "unknown dtype" in capsys.readouterr().err
    out = str(tmp_path / "b")
    for argv in (["--batches", ","], ["--new-tokens", "0"], ["--prompt-lens", "0"]):
        assert main(["--target", "random:tiny", "--device", "cpu", "--out", out, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: bench sizes must be") and len(err.strip().splitlines()) == 1
    from dynashape.cli.main import main as cli                  # `dynashape bench`: 0 new tokens is refused too
    assert cli(["bench", "random:tiny", "--device", "cpu", "--new-tokens", "0", "--out", out]) == 2
    assert "new tokens >= 2" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_profile_splits_the_prefill_from_the_decode_steps(engine_dir, tmp_path, capsys):
    """On the CPU the profiler sees no device kernels; the report still has its prefill and decode lines,
    printed and written beside the bench's other outputs with its command."""
    out = tmp_path / "p"
    assert main(["--target", str(engine_dir), "--device", "cpu", "--dtype", "float32", "--profile", "2,5",
                 "--new-tokens", "4", "--out", str(out)]) == 0
    text = (tmp_path / "p.profile.txt").read_text()
    assert text.startswith("# python -m dynashape.bench --target ") and text.strip().endswith(
        capsys.readouterr().out.strip().splitlines()[-1])
    lines = text.splitlines()[1:]
    assert lines[0].startswith("profile batch 2 prompt 5 new 4: ttft ")
    assert lines[1].startswith("  prefill: 0 kernels") and lines[2].startswith("  decode: 0.0 kernels per step")


@pytest.mark.parametrize("args", [["--profile", "x"], ["--batches", "1,a"], ["--bogus"]])
def test_module_front_end_usage_mistakes_are_one_line(args, capsys, tmp_path):
    """python -m dynashape.bench: a usage mistake is one line and exit 2 (no usage dump), nothing written."""
    with pytest.raises(SystemExit) as stop:
        main(args + ["--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_dynashape_bench_profile_from_the_cli(engine_dir, tmp_path, capsys):
    from dynashape.cli.main import main as cli
    out = tmp_path / "cli"
    args = ["bench", str(engine_dir), "--device", "cpu", "--dtype", "float32", "--new-tokens", "3", "--out", str(out)]
    assert cli(args + ["--profile", "1,4"]) == 0
    assert (tmp_path / "cli.profile.txt").read_text().startswith("# dynashape bench ")
    assert "profile batch 1 prompt 4 new 3" in capsys.readouterr().out
    assert cli(args + ["--profile", "0,4"]) != 0
    err = capsys.readouterr().err
    assert "--profile needs BATCH,PROMPT" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for bad in ("4", "1,4,9"):                                   # one size, or three: not dropped or padded
        assert cli(args + ["--profile", bad]) != 0
        err = capsys.readouterr().err
        assert f"got {bad}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
