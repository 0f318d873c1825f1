"""Model loading: random presets, local save_pretrained directories (with and without a tokenizer),
hub ids offline, non-GPT-2 models, dtypes. No download anywhere."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynashape import cli
from dynashape.errors import ModelError
from dynashape.models import PRESETS, load_info, load_model, parse_dtype

SRC = Path(__file__).resolve().parents[1] / "src"
SENTENCES = ["the dog is happy", "the cat sat on the mat", "a quick brown fox jumps over the lazy dog",
             "the dog and the cat are friends"]


def state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- random presets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_config_shapes(preset):
    info = load_info(f"random:{preset}")
    shape = PRESETS[preset]
    for key in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions"):
        assert info[key] == shape[key]
    assert info["model_type"] == "gpt2" and info["source"] == "random" and info["name"] == f"random:{preset}"
    assert info["eos_token_id"] == shape["vocab_size"] - 1


def test_real_gpt2_shapes():
    assert (PRESETS["gpt2"]["n_layer"], PRESETS["gpt2"]["n_embd"], PRESETS["gpt2"]["vocab_size"]) == (12, 768, 50257)
    assert PRESETS["gpt2-xl"]["n_layer"] == 48 and PRESETS["gpt2-xl"]["n_embd"] == 1600
    assert all(PRESETS[p]["n_positions"] == 1024 for p in PRESETS if p != "tiny")


def test_random_tiny_is_seeded():
    a, b, c = load_model("random:tiny"), load_model("random:tiny"), load_model("random:tiny", seed=1)
    assert type(a.model).__name__ == "GPT2LMHeadModel" and not a.model.training
    assert a.source == "random" and a.tokenizer is None
    assert a.config.n_layer == 2 and a.config.vocab_size == 1000 and a.config.n_positions == 256
    assert state_equal(a.model, b.model)
    assert not state_equal(a.model, c.model)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert a.model(ids).logits.shape == (1, 3, 1000)


@pytest.mark.parametrize("name", ["random:nope", "random:", "", "   "])
def test_unknown_or_empty_name(name):
    for load in (load_info, load_model):
        with pytest.raises(ModelError) as e:
            load(name)
        assert e.value.fix and "random:" in e.value.fix


def test_unknown_attention():
    with pytest.raises(ModelError, match="flash") as e:
        load_model("random:tiny", attn_implementation="flash")
    assert "--attn sdpa" in e.value.fix


# ---- dtypes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [("float32", torch.float32), ("fp32", torch.float32), ("FP16", torch.float16),
                                       ("float16", torch.float16), ("bf16", torch.bfloat16),
                                       ("bfloat16", torch.bfloat16)])
def test_parse_dtype(text, want):
    assert parse_dtype(text) is want


@pytest.mark.parametrize("text", ["int8", "float64", "", "half-ish"])
def test_parse_dtype_unknown(text):
    with pytest.raises(ModelError) as e:
        parse_dtype(text)
    assert "--dtype float32" in e.value.fix


def test_load_in_half_precision():
    lm = load_model("random:tiny", dtype=torch.bfloat16)
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}


# ---- local directories ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    lm = load_model("random:tiny", seed=3)
    lm.model.save_pretrained(path)
    return path, lm


def test_local_dir_loads_same_logits(saved_tiny):
    path, original = saved_tiny
    lm = load_model(str(path))
    assert lm.source == "local" and lm.tokenizer is None and lm.name == str(path)
    assert load_info(str(path))["source"] == "local" and load_info(str(path))["n_positions"] == 256
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, original.model(ids).logits)


def test_local_dir_without_tokenizer_prints_ids(capsys, saved_tiny):
    path, original = saved_tiny
    assert cli.main(["generate", str(path), "--prompt-ids", "1,2", "--max-new-tokens", "3", "--runtime", "nocache",
                     "--ignore-eos"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.strip().split(",")]
    with torch.no_grad():
        want = original.model.generate(torch.tensor([[1, 2]]), max_new_tokens=3, do_sample=False,
                                       eos_token_id=None, pad_token_id=999)[0, 2:].tolist()
    assert ids == want


def test_local_dir_with_attention_choice(saved_tiny):
    path, original = saved_tiny
    lm = load_model(str(path), attn_implementation="eager")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, original.model(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def model_with_tokenizer(tmp_path_factory):
    """A tiny GPT-2 with a real byte-level BPE tokenizer, trained here (no download)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    path = tmp_path_factory.mktemp("models") / "with-tok"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES * 3, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    eos = "<|endoftext|>"
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=eos, bos_token=eos, unk_token=eos)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=len(tok),
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


def test_local_tokenizer_is_loaded(model_with_tokenizer):
    path, tok = model_with_tokenizer
    lm = load_model(str(path))
    assert lm.tokenizer is not None
    assert lm.tokenizer.encode("the dog is happy") == tok.encode("the dog is happy")
    assert lm.tokenizer.decode(tok.encode("the lazy fox")) == "the lazy fox"


def test_generate_prompt_text_through_local_tokenizer(capsys, model_with_tokenizer):
    path, tok = model_with_tokenizer
    args = ["generate", str(path), "--prompt", "the dog is", "--runtime", "nocache", "--max-new-tokens", "4",
            "--ignore-eos"]
    assert cli.main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    row = res["outputs"][0]
    assert row["prompt_ids"] == tok.encode("the dog is") and len(row["new_ids"]) == 4
    assert isinstance(row["text"], str) and row["text"] == tok.decode(row["new_ids"])
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.rstrip("\n") == row["text"]  # plain output is the decoded text, not ids


def test_dir_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    for load in (load_info, load_model):
        with pytest.raises(ModelError, match="config.json") as e:
            load(str(tmp_path))
        assert "save_pretrained" in e.value.fix


def test_missing_path():
    for load in (load_info, load_model):
        with pytest.raises(ModelError, match="does not exist") as e:
            load("/x/y/z")
        assert "random:gpt2" in e.value.fix


@pytest.mark.parametrize("with_weights", [False, True])
def test_non_gpt2_dir(tmp_path, with_weights):
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                        vocab_size=100)
    BertModel(config).save_pretrained(tmp_path) if with_weights else config.save_pretrained(tmp_path)
    for load in (load_info, load_model):
        with pytest.raises(ModelError, match="'bert'") as e:
            load(str(tmp_path))
        assert "gpt2" in e.value.fix


# ---- hub ids (offline: must fail fast, naming the fix) ------------------------------------------------

def test_hub_id_offline_fails_with_fix(tmp_path):
    """In a fresh process with HF_HUB_OFFLINE=1 (read at import time by huggingface_hub)."""
    script = (
        "from dynashape.errors import ModelError\n"
        "from dynashape.models import load_info, load_model\n"
        "for load in (load_info, load_model):\n"
        "    try:\n"
        "        load('nobody-xyz/not-a-model')\n"
        "    except ModelError as e:\n"
        "        print(type(e).__name__, '|', e.message, '|', e.fix)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    p = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2, p.stdout
    for line in lines:
        kind, message, fix = (s.strip() for s in line.split("|"))
        assert kind == "ModelError" and "nobody-xyz/not-a-model" in message
        assert "random:gpt2" in fix and "local cache" in fix
