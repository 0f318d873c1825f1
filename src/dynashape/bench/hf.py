"""The Hugging Face systems of the generation bench: ``generate`` eager, or with a static cache
compiled by ``torch.compile`` (mode reduce-overhead), timed by a pass-through logits processor that
marks when each new token's logits are ready."""
from __future__ import annotations

import torch

from ..runtime.streaming import Clock


class Skip(Exception):
    """A system that cannot run here (recorded as skipped, with the reason)."""


class _Marks:
    """A pass-through logits processor: one mark on the clock per new token's logits."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def __call__(self, input_ids, scores):
        self.clock.mark(1)
        return scores


class HFRunner:
    def __init__(self, model, device, static: bool):
        from transformers import GenerationConfig

        self.model, self.device = model, device
        self.model.generation_config.eos_token_id = None    # every run makes the whole budget
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        if static:
            if device.type != "cuda":
                raise Skip("needs CUDA (static cache + torch.compile mode reduce-overhead uses CUDA graphs)")
            kw["cache_implementation"] = "static"
            import transformers.generation as tg
            if not hasattr(tg, "CompileConfig"):             # transformers 4: compile forward ourselves
                self.model.forward = torch.compile(self.model.forward, mode="reduce-overhead", fullgraph=True)
        self.kw, self.GenerationConfig = kw, GenerationConfig

    def __call__(self, ids: torch.Tensor, new_tokens: int):
        from transformers import LogitsProcessorList

        cfg = self.GenerationConfig(max_new_tokens=new_tokens, **self.kw)
        clock = Clock(self.device)                 # the engine's clock: start, each token's logits, the end
        clock.mark()
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                                  logits_processor=LogitsProcessorList([_Marks(clock)]))
        clock.mark()
        t = clock.read()
        return t.ttft_ms, t.step_ms, t.total_ms, out.shape[1] - ids.shape[1]
