"""Lean GPT-2 runtime: plain modules named after the Hugging Face keys, a static KV cache.

Pure math in the style of nanoGPT and gpt-fast: this file never calls ``torch.compile``; the
generation runtime (``dynashape.fastgen``) compiles and graph-captures these functions from outside.

Three entry points share one trunk:

- ``forward(idx)``: logits at every position (B, T, V), no cache; the reference for tests.
- ``prefill(idx, last)``: prompts right-padded to one length T, written to cache slots ``0..T-1``;
  causal attention makes right-padding exact for the real tokens, so only the logits at each row's
  last real position ``last`` are computed: (B, V).
- ``decode(idx, pos, attn_len)``: one token per row at per-row positions ``pos`` (a tensor, so
  the step has static shapes and no host sync); writes cache slot ``pos`` and attends slots
  ``0..pos`` within the first ``attn_len`` slots, so a step reads only the cache in use (rounded up).
  Its attention is either plain matmuls (``"matmul"``) or the op ``dynashape::decode_attention``
  (``"kernel"``, in ``decode_attention.py``): split-KV Triton kernels on a GPU that read each row's
  keys and values once, only up to the row's own length (the plain math on the CPU).

Two runtime options, exact either way: ``pad_vocab(64)`` computes logits against a copy of the output
weight padded with zero rows to a multiple of 64 (50257 -> 50304 for GPT-2), so the logits' row
stride is aligned and cuBLAS can pick its Hopper kernels; the padding columns are sliced off before
anyone sees them. ``set_projections("linear")`` runs the four per-layer projections through
``F.linear`` (cuBLAS addmm) instead of a plain matmul plus add (which inductor may fuse).

Weights come from any Hugging Face ``GPT2LMHeadModel`` state dict through ``hf_key_map``: the
keys are the same without the ``transformer.`` prefix, and the four ``Conv1D`` weights are stored
(in, out) where ``nn.Linear`` wants (out, in). ``lm_head`` is tied to ``wte``.
References: https://github.com/karpathy/nanoGPT, https://github.com/pytorch-labs/gpt-fast
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ModelError
from .decode_attention import decode_attention, decode_attention_op, triton  # noqa: F401

DECODE_ATTENTION = ("matmul", "kernel")
PROJECTIONS = ("mm", "linear")

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass
class GPT2Config:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257
    n_positions: int = 1024
    n_inner: int | None = None            # MLP width; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    activation: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    eos_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_dim(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_hf(cls, hf) -> "GPT2Config":
        """From a transformers ``GPT2Config``; options this runtime does not implement are refused."""
        if getattr(hf, "model_type", "gpt2") != "gpt2":
            raise ModelError(f"the fast runtime serves GPT-2 models, not {hf.model_type!r}.",
                             "use a GPT-2-family model (gpt2, distilgpt2, gpt2-medium/large/xl).")
        if getattr(hf, "add_cross_attention", False):
            raise ModelError("this GPT-2 has cross-attention, which the fast runtime does not implement.",
                             "use --runtime hf for encoder-decoder GPT-2 variants.")
        act = getattr(hf, "activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise ModelError(f"activation {act!r} is not implemented by the fast runtime.",
                             "use --runtime hf, or a model with activation_function gelu_new.")
        if hf.n_embd % hf.n_head:
            raise ModelError(f"n_embd {hf.n_embd} is not a multiple of n_head {hf.n_head}.", "fix the model config.")
        eos = hf.eos_token_id[0] if isinstance(hf.eos_token_id, (list, tuple)) else hf.eos_token_id
        return cls(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd, vocab_size=hf.vocab_size,
                   n_positions=hf.n_positions, n_inner=getattr(hf, "n_inner", None),
                   layer_norm_epsilon=hf.layer_norm_epsilon, activation=act,
                   scale_attn_weights=getattr(hf, "scale_attn_weights", True),
                   scale_attn_by_inverse_layer_idx=getattr(hf, "scale_attn_by_inverse_layer_idx", False),
                   tie_word_embeddings=getattr(hf, "tie_word_embeddings", True), eos_token_id=eos)


class Linear(nn.Linear):
    """``x @ W.T + b`` written as a matmul plus an add rather than ``F.linear`` (``use_linear`` off).

    Same math and keys; but a compiler sees a plain ``mm``, which inductor turns into a fused
    matrix-vector reduction when one row is multiplied (batch-1 decode), and the bias add fuses
    into the next elementwise kernel. ``F.linear`` lowers to ``addmm``, a cuBLAS call either way.
    """
    use_linear = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_linear:
            return F.linear(x, self.weight, self.bias)
        return x @ self.weight.t() + self.bias


class KVCache(nn.Module):
    """Preallocated keys (max_batch, n_head, max_len, head_dim) and values stored transposed,
    (max_batch, n_head, head_dim, max_len), so both decode reductions run over contiguous memory."""

    def __init__(self, max_batch: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        k_shape, v_shape = (max_batch, n_head, max_len, head_dim), (max_batch, n_head, head_dim, max_len)
        self.register_buffer("k", torch.zeros(k_shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(v_shape, dtype=dtype, device=device), persistent=False)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd)      # fused q, k, v
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd)
        scale = 1.0 / math.sqrt(cfg.head_dim) if cfg.scale_attn_weights else 1.0
        self.scale = scale / (layer_idx + 1) if cfg.scale_attn_by_inverse_layer_idx else scale
        self.kv_cache: KVCache | None = None
        self.decode_attention = "matmul"                         # or "kernel": see GPT2.set_decode_attention

    def _split_heads(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                 # 3 x (B, T, C)
        return [t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v)]  # (B, H, T, D)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, attn_len: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._split_heads(x)
        if pos is None:                                          # prompt: slots 0..T-1, causal
            if self.kv_cache is not None:
                self.kv_cache.k[:B, :, :T] = k
                self.kv_cache.v[:B, :, :, :T] = v.transpose(-1, -2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:                                                    # one token per row at slot pos[b]
            rows = torch.arange(B, device=x.device)
            self.kv_cache.k[rows, :, pos] = k[:, :, 0]           # (B, H, D) into (B, H, L, D)
            self.kv_cache.v[rows, :, :, pos] = v[:, :, 0]        # (B, H, D) into (B, H, D, L)
            if self.decode_attention == "kernel":                # whole buffers, per-row lengths pos + 1
                y = decode_attention_op(q[:, :, 0], self.kv_cache.k, self.kv_cache.v, pos + 1,
                                        attn_len, self.scale)[:, :, None]       # (B, H, 1, D)
            else:
                keys = self.kv_cache.k[:B, :, :attn_len]         # (B, H, S, D)
                values_t = self.kv_cache.v[:B, :, :, :attn_len]  # (B, H, D, S)
                y = decode_attention(q, keys, values_t, mask, self.scale)
        y = y.transpose(1, 2).reshape(B, T, C)                   # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, cfg.mlp_dim)
        self.c_proj = Linear(cfg.mlp_dim, cfg.n_embd)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, pos=None, mask=None, attn_len=0):
        x = x + self.attn(self.ln_1(x), pos, mask, attn_len)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight
        self.cache_shape: tuple[int, int] | None = None          # (max_batch, max_len)
        self.head_weight: torch.Tensor | None = None             # (V padded, C): see pad_vocab

    # ---- cache -------------------------------------------------------------------------------
    def setup_cache(self, max_batch: int, max_len: int) -> None:
        """Allocate one KV cache per layer on the model's device and dtype (in place of any old one)."""
        cfg, w = self.config, self.wte.weight
        for block in self.h:
            block.attn.kv_cache = None                           # free the old cache first
        for block in self.h:
            block.attn.kv_cache = KVCache(max_batch, cfg.n_head, max_len, cfg.head_dim, w.dtype, w.device)
        self.cache_shape = (max_batch, max_len)

    def set_decode_attention(self, kind: str) -> None:
        """``"matmul"`` (plain batched matmuls) or ``"kernel"`` (the split-KV op) for decode steps."""
        if kind not in DECODE_ATTENTION:
            raise ModelError(f"unknown decode attention {kind!r}.", "use 'matmul' or 'kernel'.")
        for block in self.h:
            block.attn.decode_attention = kind

    def set_projections(self, kind: str) -> None:
        """``"mm"`` (matmul plus add, fusable) or ``"linear"`` (``F.linear``: cuBLAS) for the 4 projections."""
        if kind not in PROJECTIONS:
            raise ModelError(f"unknown projections {kind!r}.", "use 'mm' or 'linear'.")
        for m in self.modules():
            if isinstance(m, Linear):
                m.use_linear = kind == "linear"

    def pad_vocab(self, multiple: int) -> None:
        """Logits from a copy of the output weight padded with zero rows to a multiple of ``multiple``
        (1 or less: no padding). Call after the model is on its device and dtype; the padding columns
        are sliced off in ``_logits``, so callers see (..., V) logits that can never pick them."""
        V, w = self.config.vocab_size, self.lm_head.weight
        Vp = -(-V // multiple) * multiple if multiple > 1 else V
        if Vp == V:
            self.head_weight = None
            return
        head = torch.zeros(Vp, w.shape[1], dtype=w.dtype, device=w.device)
        head[:V] = w
        self.head_weight = head                                  # (Vp, C); rows V.. are zero

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) after ln_f -> (..., V). With padding: (..., Vp) computed, the first V kept."""
        if self.head_weight is None:
            return self.lm_head(x)
        return F.linear(x, self.head_weight)[..., :self.config.vocab_size]

    # ---- math --------------------------------------------------------------------------------
    def _trunk(self, idx, positions, pos=None, mask=None, attn_len=0) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(positions)                  # (B, T, C)
        for block in self.h:
            x = block(x, pos, mask, attn_len)
        return x                                                 # (B, T, C), before ln_f

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits at every position, (B, T) -> (B, T, V). Writes the cache when one is set up."""
        T = idx.shape[1]
        positions = torch.arange(T, device=idx.device)
        return self._logits(self.ln_f(self._trunk(idx, positions)))

    def prefill(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Right-padded prompts (B, T) and each row's last real index (B,) -> next-token logits (B, V)."""
        B, T = idx.shape
        positions = torch.arange(T, device=idx.device)
        x = self._trunk(idx, positions)                          # (B, T, C)
        x = x[torch.arange(B, device=idx.device), last]          # (B, C): only the rows' last tokens
        return self._logits(self.ln_f(x))

    def decode(self, idx: torch.Tensor, pos: torch.Tensor, attn_len: int) -> torch.Tensor:
        """One step: tokens (B,) at cache slots pos (B,) -> logits (B, V). attn_len > max(pos)."""
        S = attn_len
        mask = torch.arange(S, device=idx.device)[None, :] <= pos[:, None]   # (B, S): slots 0..pos
        x = self._trunk(idx[:, None], pos[:, None], pos, mask[:, None, None, :], S)   # (B, 1, C)
        return self._logits(self.ln_f(x[:, 0]))

    # ---- weights -----------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf_model, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> "GPT2":
        """Build from a Hugging Face ``GPT2LMHeadModel`` (weights copied by ``hf_key_map``)."""
        cfg = GPT2Config.from_hf(hf_model.config)
        with torch.device("meta"):
            model = cls(cfg)
        state = load_hf_state_dict(cfg, hf_model.state_dict())
        model.load_state_dict(state, strict=True, assign=True)
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.wte.weight
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def hf_key_map(cfg: GPT2Config) -> dict[str, tuple[str, bool]]:
    """Our parameter name -> (Hugging Face key, transpose?). The explicit mapping, one line per key."""
    names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    for i in range(cfg.n_layer):
        for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += [f"h.{i}.{part}.weight", f"h.{i}.{part}.bias"]
    mapping = {n: ("transformer." + n, n.endswith(CONV1D_WEIGHTS)) for n in names}
    mapping["lm_head.weight"] = ("lm_head.weight", False)
    return mapping


def load_hf_state_dict(cfg: GPT2Config, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face state dict -> ours: Conv1D weights transposed, lm_head tied to wte when tied."""
    state, missing = {}, []
    for ours, (key, transpose) in hf_key_map(cfg).items():
        if key not in hf_state:
            if ours == "lm_head.weight" and cfg.tie_word_embeddings:
                state[ours] = hf_state["transformer.wte.weight"]
                continue
            missing.append(key)
            continue
        t = hf_state[key]
        state[ours] = t.t().contiguous() if transpose else t
    if missing:
        raise ModelError(f"the checkpoint lacks {len(missing)} GPT-2 weights (first: {missing[0]!r}).",
                         "load a complete GPT2LMHeadModel checkpoint.")
    return state
