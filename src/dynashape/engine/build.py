"""Build an engine's graphs: the lean model (generation engines) or the exported program (forward
engines), compiled by the backend, warmed up, and for generation engines on a GPU with every
planned CUDA graph captured once, so a kernel the engine will need is compiled here, not at load.
"""
from __future__ import annotations

import contextlib
import time

import torch

from ..backends import get_backend
from ..errors import BackendError, EngineError
from ..models import family_for
from ..models.load import parse_dtype


def step(progress, what: str):
    """``progress(what)`` (a context manager per step, e.g. the CLI's spinner) or nothing."""
    return progress(what) if progress is not None else contextlib.nullcontext()


def build_runners(loaded, plan, settings, progress=None):
    """-> (lean model or None, exported program or None, runners, timings)."""
    backend = get_backend(settings.backend)
    if backend.KIND != plan.runtime.kind:
        raise BackendError(f"the plan was made for a {plan.runtime.kind} engine, and backend {settings.backend!r} "
                           f"builds {backend.KIND} engines.", f"plan with --backend {settings.backend}.")
    dtype = parse_dtype(settings.dtype)
    timings = {}
    if plan.runtime.kind == "generation":
        from .engine import configure

        fam = family_for(loaded.config.model_type)
        model = configure(fam.Model.from_hf(loaded.model, dtype=dtype, device=settings.device), plan)
        t0 = time.perf_counter()
        with step(progress, f"compile prefill and decode ({settings.backend})"):
            runners = backend.build(plan, settings, model=model)
        timings["compile_s"] = round(time.perf_counter() - t0, 3)
        return model, None, runners, timings
    from ..graphs import check_program, export_plan

    hf = loaded.model.to(settings.device, dtype)
    with step(progress, "export the forward graph"):
        exported = export_plan(hf, plan, settings.device)
    problems = [f for f in check_program(exported.program, plan) if f.status == "REFUSED"]
    if problems:
        raise EngineError(problems[0].message, problems[0].fix)
    timings["export_s"] = round(exported.seconds, 3)
    t0 = time.perf_counter()
    with step(progress, f"compile the forward graph ({settings.backend})"):
        runners = backend.build(plan, settings, program=exported.program, hf_model=hf)
    timings["compile_s"] = round(time.perf_counter() - t0, 3)
    return None, exported.program, runners, timings


def warm_up(engine, progress=None) -> float:
    """Run the graphs once at every planned size (CUDA: capture the decode graphs) and check the logits.

    Kernels compile here, into the folders the backend gave them, so the engine can carry them. With
    CUDA graphs, every captured batch size also runs a greedy and a sampling generation, on prompts of
    one token, of one more than a prefill bucket and of the longest prompt: the kernels' launch rules
    depend on the rows (prefill rows = batch x padded length, the head's rows = batch), and a variant
    missing here would compile in every process that loads the engine (seconds, on its first request)."""
    t0 = time.perf_counter()
    what = "warm up and capture the decode graphs" if engine.plan.runtime.cuda_graph_batches else "warm up"
    with step(progress, what):
        gen = engine.generator
        n = min(2, gen.max_batch)
        logits = gen.prefill_logits([[1]] * n)
        if not torch.isfinite(logits).all():
            raise EngineError(f"the compiled {engine.backend} prefill graph returned non-finite logits.",
                              "report this as a dynashape bug; use --backend eager meanwhile.")
        new = min(2, gen.max_len - 1)
        gen.generate([[1]] * n, new, ignore_eos=True)
        if gen.graphs.cuda:
            _warm_graphs(gen, new)
    return round(time.perf_counter() - t0, 3)


def _warm_graphs(gen, new: int) -> None:
    from ..runtime.sampling import SamplingSettings

    longest = gen.max_len - new
    sizes = sorted({min(gen.graphs.batch_size(b), gen.max_batch) for b in gen.policy.cuda_graph_batches})
    for B in sizes:
        gen.generate([[1]] * B, new, ignore_eos=True)
        gen.generate([[1]] * B, new, sampling=SamplingSettings(temperature=1.0), ignore_eos=True)
    for L in sorted({min(gen.policy.prefill_bucket + 1, longest), longest}):
        for B in {sizes[0], sizes[-1]}:
            gen.generate([[1] * L] * B, new, ignore_eos=True)
