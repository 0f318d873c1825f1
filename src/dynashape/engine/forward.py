"""Calling a forward engine: logits at every position, every call checked against the plan.

Sizes the graph cannot take (``plan.pad_to``) are padded and the outputs sliced back: sequences are
right-padded (causal attention keeps the real positions blind to the padding) and missing batch
rows are dummies (rows never mix in a transformer).
"""
from __future__ import annotations

import torch

from ..errors import EngineError
from ..models.load import dtype_name

PAD_ID = 0


class ForwardCalls:
    """Mixed into Engine: ``engine(input_ids, attention_mask=None) -> logits (B, T, V)``."""

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Raise EngineError for anything this engine was not built for."""
        if not isinstance(input_ids, torch.Tensor):
            raise EngineError(f"input_ids must be a tensor, got {type(input_ids).__name__}.",
                              "pass torch.tensor([[...]], dtype=torch.long).")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise EngineError(f"input_ids has dtype {dtype_name(input_ids.dtype)}; token ids are integers.",
                              "pass input_ids as torch.long.")
        if input_ids.dim() != 2:
            raise EngineError(f"input_ids has rank {input_ids.dim()} (shape {tuple(input_ids.shape)}); "
                              "the engine takes (batch, seq).", "add a batch axis: input_ids[None].")
        for axis, dim in enumerate(("batch", "seq")):
            size, r = input_ids.shape[axis], self.plan.serve[dim]
            if size not in r:
                wider = f"{min(r.min, size)}:{max(r.max, size)}"
                raise EngineError(f"input_ids {dim} {size} is outside this engine's {dim} range "
                                  f"{r.min}..{r.max} (it was built with --{dim} {r.text()}).",
                                  f"rebuild with a range that holds {size}: {self.rebuild_hint(**{dim: wider})}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise EngineError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                              f"{tuple(input_ids.shape)}; they share batch and seq.", "pass masks of the same shape.")
        vocab = self.plan.model["vocab_size"]
        lo, hi = torch.stack(torch.aminmax(input_ids)).tolist()  # one host sync per call, not two
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise EngineError(f"token id {bad} is outside the vocabulary 0..{vocab - 1}.",
                              f"pass ids between 0 and {vocab - 1}.")

    def _pad(self, input_ids, attention_mask):
        b, t = input_ids.shape
        gb, gt = self.plan.graph_size("batch", b), self.plan.graph_size("seq", t)
        if gt > t:
            input_ids = torch.nn.functional.pad(input_ids, (0, gt - t), value=PAD_ID)
            attention_mask = torch.nn.functional.pad(attention_mask, (0, gt - t), value=0)
        if gb > b:
            input_ids = torch.cat([input_ids, input_ids[:1].expand(gb - b, -1)], 0)
            attention_mask = torch.cat([attention_mask, attention_mask[:1].expand(gb - b, -1)], 0)
        return input_ids, attention_mask

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for input_ids (B, T); raises EngineError outside the plan."""
        if "forward" not in self.runners:
            raise EngineError(f"a {self.backend} generation engine has no forward graph (logits at every position).",
                              "use engine.generate(...), or engine.generator.prefill_logits(prompts) for the "
                              "logits after each prompt.")
        self.check_inputs(input_ids, attention_mask)
        b, t = input_ids.shape
        input_ids = input_ids.to(self.device, torch.long)
        mask = (torch.ones_like(input_ids) if attention_mask is None
                else attention_mask.to(self.device, torch.long))
        ids, mask = self._pad(input_ids, mask)
        feeds = {"input_ids": ids, "attention_mask": mask}
        names = [s.name for s in self.plan.inputs]
        if "position_ids" in names:
            feeds["position_ids"] = torch.arange(ids.shape[1], device=self.device).expand_as(ids).contiguous()
        with torch.no_grad():
            logits = self.runners["forward"](**{k: feeds[k] for k in names})
        return logits[:b, :t]
