"""Lean GPT-2: plain modules named after the Hugging Face keys, and a KV cache passed in explicitly.

Pure math in the style of nanoGPT and gpt-fast: this file never calls ``torch.compile``; backends
compile (or not) these functions from outside, and the runtime captures them in CUDA graphs.

Three entry points share one trunk. The cache is owned by the caller: keys ``k`` and values ``v``,
each a list of one tensor per layer, ``(n_slots, n_head, max_len, head_dim)``, updated in place by
plain ``index_put_`` on the whole tensor (a write through a view of a bigger tensor makes compilers
copy the whole cache every step). Every row of a batch names its cache row (``slots``), so requests
can join and leave a running batch (continuous batching) and padding rows can point at a scratch
slot:

- ``forward(idx)``: logits at every position (B, T, V), no cache; the reference for tests.
- ``prefill(idx, last, slots, k, v)``: prompts right-padded to one length T, written to positions
  ``0..T-1`` of their slots; causal attention makes right-padding exact for the real tokens, so only
  each row's last real position ``last`` gets logits: (B, V).
- ``decode(tok, pos, slots, k, v)``: one token per row at per-row positions ``pos`` (tensors: static
  shapes, no host sync); writes position ``pos`` and attends positions ``0..pos`` of its slot.

Decode options (``configure``), exact either way, recorded in the engine's plan:
``attention`` "matmul" (masked matmuls over the whole cache row) or "kernel" (the split-KV op of
``decode_attention.py``: reads each row only up to its own length); ``kernels`` "torch" or "fused"
(dynashape's Triton kernels in ``kernels/``: a decoder layer's decode step in 6 to 8 launches, the cache
write fused into the QKV projection; GPU only, not traceable by torch.export); ``prefill`` "torch"
or "fused" (the same kernels over every prompt position, with a causal attention kernel that reads
the cache the QKV kernel has just written, for prefills of up to ``FUSED_PREFILL_ROWS`` rows = batch x
padded prompt; PyTorch ops above: see there); ``vocab_pad``: logits
from an output weight padded with zero rows to a multiple (50257 -> 50304), so the GEMM gets an
aligned row stride; the padding columns are sliced off before anyone sees them.

Weights come from a Hugging Face ``GPT2LMHeadModel`` state dict through ``hf_key_map``: the keys are
the same without the ``transformer.`` prefix, and the four ``Conv1D`` weights are stored (in, out)
where ``nn.Linear`` wants (out, in). ``lm_head`` is tied to ``wte``.
References: https://github.com/karpathy/nanoGPT, https://github.com/pytorch-labs/gpt-fast
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ModelError
from .decode_attention import decode_attention, decode_attention_op

ATTENTION = ("matmul", "kernel")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")       # what the fused kernels implement
# Fused prefill up to this many rows (batch x padded prompt), PyTorch ops (cuBLAS) above. H100, gpt2 fp16,
# the prefill graph alone, same-run A/B over interleaved rounds (bench/results/h100_decode_ab2_gpt2_fp16.json):
# 64 rows 0.48 ms fused vs 0.89 torch, 128 rows 0.63 vs 0.89, 512 rows 0.98 vs 1.05. Not measured above 512.
FUSED_PREFILL_ROWS = 512
KERNELS = ("torch", "fused")
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

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf(cls, hf) -> "GPT2Config":
        """From a transformers ``GPT2Config``; options this model does not implement are refused."""
        if getattr(hf, "model_type", "gpt2") != "gpt2":
            raise ModelError(f"dynashape serves GPT-2 models, not {hf.model_type!r}.",
                             "use a GPT-2-family model (gpt2, distilgpt2, gpt2-medium/large/xl).")
        if getattr(hf, "add_cross_attention", False):
            raise ModelError("this GPT-2 has cross-attention, which dynashape's generation engine does not implement.",
                             "use a decoder-only GPT-2 checkpoint.")
        act = getattr(hf, "activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise ModelError(f"activation {act!r} is not implemented by dynashape's generation engine.",
                             "use a model with activation_function gelu_new.")
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
    """``F.linear`` when run as it is (cuBLAS adds the bias in the GEMM: one kernel, not two), but
    ``x @ W.T + b`` under a compiler: inductor then sees a plain ``mm``, which it turns into a fused
    matrix-vector reduction for one row (batch-1 decode, measured 30% faster than cuBLAS addmm there)
    with the bias fused into the next elementwise kernel. Same math and keys either way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return x @ self.weight.t() + self.bias
        return F.linear(x, self.weight, self.bias)


def cache_shape(cfg: GPT2Config, n_slots: int, max_len: int) -> tuple[int, ...]:
    """One layer's keys (or values): (n_slots, n_head, max_len, head_dim); a cache holds n_layer of each."""
    return (n_slots, cfg.n_head, max_len, cfg.head_dim)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.n_head, self.head_dim, self.layer = cfg.n_head, cfg.head_dim, layer_idx
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd)     # fused q, k, v
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd)
        scale = 1.0 / math.sqrt(cfg.head_dim) if cfg.scale_attn_weights else 1.0
        self.scale = scale / (layer_idx + 1) if cfg.scale_attn_by_inverse_layer_idx else scale
        self.attention = "matmul"

    def _heads(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                # 3 x (B, T, C)
        return [t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v)]  # (B, H, T, D)

    def forward(self, x, cache=None, slots=None, pos=None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._heads(x)
        if pos is None:                                          # whole prompt: positions 0..T-1, causal
            if cache is not None:
                ck, cv = cache[0][self.layer], cache[1][self.layer]        # (n_slots, H, L, D)
                heads, steps = torch.arange(self.n_head, device=x.device), torch.arange(T, device=x.device)
                at = (slots[:, None, None], heads[None, :, None], steps[None, None, :])   # (B, H, T) indices
                ck.index_put_(at, k)
                cv.index_put_(at, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:                                                    # one token per row at position pos[b]
            ck, cv = cache[0][self.layer], cache[1][self.layer]
            ck[slots, :, pos] = k[:, :, 0]                       # (B, H, D) into (n_slots, H, L, D)
            cv[slots, :, pos] = v[:, :, 0]
            if self.attention == "kernel":
                y = decode_attention_op(q[:, :, 0], ck, cv, slots, pos + 1, self.scale)[:, :, None]
            else:
                y = decode_attention(q, ck[slots], cv[slots], pos, self.scale)     # (B, H, 1, D)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


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

    def forward(self, x, cache=None, slots=None, pos=None):
        x = x + self.attn(self.ln_1(x), cache, slots, pos)
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
        self.kernels, self.prefill_kernels, self.pdl = "torch", "torch", False
        self.head_weight: torch.Tensor | None = None             # (V padded, C): see configure

    # ---- options -----------------------------------------------------------------------------
    def configure(self, attention: str = "matmul", kernels: str = "torch", vocab_pad: int = 1,
                  pdl: bool = False, prefill: str = "torch") -> "GPT2":
        """Decode options (module docstring). Call once the model is on its device and dtype. ``pdl``:
        the fused kernels chain with programmatic dependent launch where the GPU has it (Hopper)."""
        if attention not in ATTENTION:
            raise ModelError(f"unknown decode attention {attention!r}.", "use 'matmul' or 'kernel'.")
        for what, value in (("decode", kernels), ("prefill", prefill)):
            if value not in KERNELS:
                raise ModelError(f"unknown {what} kernels {value!r}.", "use 'torch' or 'fused'.")
        if "fused" in (kernels, prefill) and self.config.activation not in TANH_GELUS:
            raise ModelError(f"the fused decode kernels implement the tanh GELU, not {self.config.activation!r}.",
                             "use --kernels torch.")
        for block in self.h:
            block.attn.attention = attention
        self.kernels, self.prefill_kernels = kernels, prefill
        self.pdl = False
        if pdl and kernels == "fused":
            from .kernels.gemv import pdl_supported

            self.pdl = pdl_supported(self.wte.weight.device)
        V, w = self.config.vocab_size, self.lm_head.weight
        Vp = -(-V // vocab_pad) * vocab_pad if vocab_pad > 1 else V
        self.head_weight = None
        if Vp != V:
            self.head_weight = torch.cat([w, w.new_zeros(Vp - V, w.shape[1])])   # (Vp, C); rows V.. are zero
        return self

    def new_cache(self, n_slots: int, max_len: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Zeroed keys and values, one tensor per layer, on the model's device and dtype."""
        w, shape = self.wte.weight, cache_shape(self.config, n_slots, max_len)
        new = lambda: [torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in range(self.config.n_layer)]  # noqa: E731
        return new(), new()

    # ---- math --------------------------------------------------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) after ln_f -> (..., V). With padding: (..., Vp) computed, the first V kept."""
        if self.head_weight is None:
            return self.lm_head(x)
        return F.linear(x, self.head_weight)[..., :self.config.vocab_size]

    def _trunk(self, idx, positions, cache=None, slots=None, pos=None) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(positions)                  # (B, T, C)
        for block in self.h:
            x = block(x, cache, slots, pos)
        return x                                                 # (B, T, C), before ln_f

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits at every position, (B, T) -> (B, T, V). No cache."""
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self._logits(self.ln_f(self._trunk(idx, positions)))

    def prefill(self, idx, last, slots, k, v) -> torch.Tensor:
        """Right-padded prompts (B, T), each row's last real index (B,), its cache slot (B,) -> (B, V)."""
        if self.prefill_kernels == "fused" and idx.numel() <= FUSED_PREFILL_ROWS:
            from .kernels.decode import fused_prefill

            return fused_prefill(self, idx, last, slots, k, v)
        B, T = idx.shape
        x = self._trunk(idx, torch.arange(T, device=idx.device), (k, v), slots)   # (B, T, C)
        x = x[torch.arange(B, device=idx.device), last]          # (B, C): only the rows' last tokens
        return self._logits(self.ln_f(x))

    def decode(self, tok, pos, slots, k, v) -> torch.Tensor:
        """One step: tokens (B,) at positions pos (B,) of cache slots (B,) -> logits (B, V)."""
        if self.kernels == "fused":
            from .kernels.decode import fused_decode

            return fused_decode(self, tok, pos, slots, k, v)
        x = self._trunk(tok[:, None], pos[:, None], (k, v), slots, pos)   # (B, 1, C)
        return self._logits(self.ln_f(x[:, 0]))

    def decode_greedy(self, rows, tok_state, pos_state, last_pos: int, k, v, out) -> None:
        """Fused kernels only: one greedy step in place for batch rows naming cache slots ``rows`` (B,):
        each row feeds ``tok_state[slot]`` at position ``min(pos_state[slot], last_pos)``; its argmax goes
        to ``out`` (B,) and ``tok_state[slot]``, and ``pos_state[slot]`` moves one on. The runtime's
        greedy step (``runtime/graphs.py``) in two launches instead of ~10 ops."""
        if self.kernels != "fused":
            raise ModelError("decode_greedy runs on the fused kernels only.", "configure(kernels='fused'), or "
                             "decode and take the argmax.")
        from .kernels.decode import fused_decode_greedy

        fused_decode_greedy(self, rows, tok_state, pos_state, last_pos, k, v, out)

    # ---- weights -----------------------------------------------------------------------------
    @classmethod
    def from_state(cls, cfg: GPT2Config, state: dict[str, torch.Tensor], dtype=None, device=None) -> "GPT2":
        """Build from our own state dict (keys as ``hf_key_map``), e.g. an engine's weights file."""
        with _no_init(), torch.device("meta"):
            model = cls(cfg)
        if cfg.tie_word_embeddings:
            state = {k: t for k, t in state.items() if k != "lm_head.weight"}
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
        if missing or unexpected:
            raise ModelError(f"the weights do not fit the GPT-2 config (missing {missing[:2]}, unexpected "
                             f"{unexpected[:2]}).", "rebuild the engine from the model.")
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.wte.weight
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    @classmethod
    def from_hf(cls, hf_model, dtype=None, device=None) -> "GPT2":
        """Build from a Hugging Face ``GPT2LMHeadModel`` (weights copied by ``hf_key_map``)."""
        cfg = GPT2Config.from_hf(hf_model.config)
        return cls.from_state(cfg, load_hf_state_dict(cfg, hf_model.state_dict()), dtype, device)


@contextlib.contextmanager
def _no_init():
    """Modules built for weights that are assigned next: skip their random init (on the meta device it
    would also import torch's compiler stack, seconds of a load)."""
    kinds = (nn.Linear, nn.Embedding, nn.LayerNorm)
    old = [k.reset_parameters for k in kinds]
    for k in kinds:
        k.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for k, f in zip(kinds, old):
            k.reset_parameters = f


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


def to_hf_state_dict(cfg: GPT2Config, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> Hugging Face keys (the inverse of ``load_hf_state_dict``), for the eager reference."""
    out = {}
    for ours, (key, transpose) in hf_key_map(cfg).items():
        if ours == "lm_head.weight" and cfg.tie_word_embeddings and ours not in state:
            continue
        t = state[ours]
        out[key] = t.t().contiguous() if transpose else t
    return out
