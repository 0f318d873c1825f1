"""The Hugging Face systems of the generation bench: ``generate`` eager, or with a static cache
compiled by ``torch.compile`` (mode reduce-overhead), timed by a pass-through logits processor that
marks when each new token's logits are ready."""
from __future__ import annotations

import time

import torch

from .machine import Timer


class Skip(Exception):
    """A system that cannot run here (recorded as skipped, with the reason)."""


class _Marks:
    def __init__(self, device):
        self.cuda, self.marks = device.type == "cuda", []

    def __call__(self, input_ids, scores):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())
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
        marks = _Marks(self.device)
        start = Timer(self.device)
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                                  logits_processor=LogitsProcessorList([marks]))
        total = start.stop()
        ms = (lambda a, b: a.elapsed_time(b)) if start.cuda else (lambda a, b: (b - a) * 1e3)
        points = [start.a if start.cuda else start.t0] + marks.marks
        steps = [ms(a, b) for a, b in zip(points[1:], points[2:])]
        return ms(points[0], points[1]), steps, total, out.shape[1] - ids.shape[1]
