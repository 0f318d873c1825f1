"""Loading a GPT-2-family model: a Hugging Face hub id, a local ``save_pretrained`` directory, or
``random:<preset>`` (the real architecture with seeded random weights, no download).

Every path returns a :class:`LoadedModel` holding the Hugging Face ``GPT2LMHeadModel`` (eval mode,
the chosen attention implementation), its config, and a tokenizer when one is available.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

# The real GPT-2 shapes; weights are random (seeded). ``tiny`` is for fast tests.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=256),
    "distilgpt2": dict(n_layer=6, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, n_positions=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, vocab_size=50257, n_positions=1024),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, vocab_size=50257, n_positions=1024),
}
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass
class LoadedModel:
    name: str                      # what the user wrote
    source: str                    # "random" | "local" | "hub"
    model: Any                     # transformers GPT2LMHeadModel, eval mode
    config: Any                    # transformers GPT2Config
    tokenizer: Any = None          # a tokenizer, or None (then prompts are token ids)

    def info(self) -> dict:
        """The model facts a plan needs (JSON)."""
        c = self.config
        return {"name": self.name, "source": self.source, "model_type": c.model_type,
                "n_positions": int(c.n_positions), "vocab_size": int(c.vocab_size),
                "n_layer": int(c.n_layer), "n_head": int(c.n_head), "n_embd": int(c.n_embd),
                "eos_token_id": c.eos_token_id}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r}.", "use --dtype float32, float16 or bfloat16.") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@contextlib.contextmanager
def _quiet_transformers():
    """transformers logs warnings (e.g. about random configs) that are noise for our users."""
    logs = [logging.getLogger(n) for n in ("transformers", "huggingface_hub")]
    old = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for log, level in zip(logs, old):
            log.setLevel(level)


def preset_config(preset: str, attn_implementation: str = "sdpa"):
    from transformers import GPT2Config

    if preset not in PRESETS:
        raise ModelError(f"unknown preset 'random:{preset}'.",
                         "use one of " + ", ".join(f"random:{p}" for p in PRESETS) + ".")
    shape = PRESETS[preset]
    eos = shape["vocab_size"] - 1  # GPT-2's <|endoftext|> is the last id
    with _quiet_transformers():
        cfg = GPT2Config(**shape, bos_token_id=eos, eos_token_id=eos)
    cfg._attn_implementation = attn_implementation
    return cfg


def model_from_config(config, attn_implementation: str = "sdpa", seed: int = 0,
                      state_dict: dict | None = None, dtype: torch.dtype = torch.float32):
    """Build ``GPT2LMHeadModel`` from a config: seeded random weights, or the given state dict."""
    from transformers import GPT2LMHeadModel

    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    with _quiet_transformers():
        model = GPT2LMHeadModel(config)
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        real_missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if real_missing or unexpected:
            raise ModelError(f"weights do not fit the GPT-2 config (missing {real_missing[:3]}, "
                             f"unexpected {list(unexpected)[:3]}).", "rebuild the engine from the model.")
    return model.to(dtype).eval()


def _check_gpt2(config, name: str) -> None:
    if getattr(config, "model_type", None) != "gpt2":
        raise ModelError(f"{name!r} is a {getattr(config, 'model_type', 'unknown')!r} model; dynashape serves "
                         "the GPT-2 family only.", "use gpt2, distilgpt2, gpt2-medium/large/xl or a GPT-2 fine-tune.")


def _tokenizer_from(path: str, local_only: bool):
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    except Exception:  # no tokenizer files: prompts are token ids then
        return None
    # transformers 5 returns an empty GPT-2 tokenizer (vocab_size 0) for a directory without tokenizer
    # files; it would decode every token to "" -- that is no tokenizer.
    return tok if getattr(tok, "vocab_size", 0) else None


def _resolve(name: str) -> tuple[str, str, bool]:
    """(source, target, local_only) for a local directory or a hub id."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{name!r} is a path but holds no config.json.",
                             "point at a directory written by save_pretrained, or use random:gpt2.")
        return "local", str(path), True
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model directory {name!r} does not exist.",
                         "check the path, or use random:gpt2 for a model with random weights.")
    return "hub", name, False


def load_info(name: str, attn_implementation: str = "sdpa") -> dict:
    """The model facts a plan needs, from the config alone (no weights are built or read)."""
    from transformers import AutoConfig

    name = str(name or "").strip()
    if not name:
        raise ModelError("no model given.", "name a model: random:gpt2, a local directory, or a hub id like gpt2.")
    if name.startswith("random:"):
        cfg = preset_config(name.split(":", 1)[1], attn_implementation)
        return LoadedModel(name, "random", None, cfg).info()
    source, target, local_only = _resolve(name)
    cfg, err = None, None
    for only in ([True] if local_only else [True, False]):
        try:
            with _quiet_transformers():
                cfg = AutoConfig.from_pretrained(target, local_files_only=only)
            break
        except Exception as e:  # translated below
            err = e
    if cfg is None:
        raise ModelError(f"could not read the config of {name!r} ({type(err).__name__}).",
                         "use random:gpt2 (no download), a directory saved with save_pretrained, "
                         "or a hub id that is in the local cache.")
    _check_gpt2(cfg, name)
    return LoadedModel(name, source, None, cfg).info()


def load_model(name: str, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32,
               seed: int = 0) -> LoadedModel:
    """Load ``name``: ``random:<preset>``, a local directory, or a hub id (cache first, then download)."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ModelError(f"unknown attention implementation {attn_implementation!r}.",
                         "use --attn sdpa or --attn eager.")
    if not name or not str(name).strip():
        raise ModelError("no model given.", "name a model: random:gpt2, a local directory, or a hub id like gpt2.")
    name = str(name).strip()
    if name.startswith("random:"):
        cfg = preset_config(name.split(":", 1)[1], attn_implementation)
        model = model_from_config(cfg, attn_implementation, seed=seed, dtype=dtype)
        return LoadedModel(name, "random", model, model.config, None)

    from transformers import GPT2LMHeadModel

    source, target, local_only = _resolve(name)
    load_info(name, attn_implementation)  # the config first: a missing or non-GPT-2 model is named clearly
    model = None
    errors = []
    for only in ([True] if local_only else [True, False]):  # hub ids: the local cache first
        try:
            with _quiet_transformers():
                model = GPT2LMHeadModel.from_pretrained(target, attn_implementation=attn_implementation,
                                                        local_files_only=only, torch_dtype=dtype)
            break
        except Exception as e:  # transformers raises OSError/ValueError/HTTP errors; we translate all
            errors.append(e)
            if isinstance(e, ValueError) and "model_type" in str(e):
                break
    if model is None:
        cfg_err = next((e for e in errors if "model_type" in str(e) or "GPT2Config" in str(e)), None)
        if cfg_err is not None:
            raise ModelError(f"{name!r} is not a GPT-2 model ({str(cfg_err).splitlines()[0][:120]}).",
                             "use a GPT-2-family checkpoint.")
        where = "local directory" if source == "local" else "hub id (not in the local cache, download failed)"
        raise ModelError(f"could not load model {name!r} as a {where}: {type(errors[-1]).__name__}.",
                         "use random:gpt2 (no download), a directory saved with save_pretrained, "
                         "or a hub id that is in the local cache.")
    _check_gpt2(model.config, name)
    tok = _tokenizer_from(target, local_only=True)
    return LoadedModel(name, source, model.eval(), model.config, tok)
