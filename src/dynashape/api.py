"""The library, without the CLI.

    import dynashape
    plan = dynashape.plan("random:gpt2", seq="1:1024", batch="1:8")          # ShapePlan (refusals inside)
    engine = dynashape.compile("random:gpt2", seq="1:1024", batch="1:8", out="engines/gpt2")
    engine = dynashape.load("engines/gpt2")                                  # another process: no compiling
    tokens = engine.generate([[464, 3290, 318]], max_new_tokens=20)
    report = dynashape.verify(engine)                                        # prefill, decode, greedy vs HF
"""
from __future__ import annotations

from pathlib import Path

from .backends import CompileSettings, get_backend, resolve_device
from .engine import Engine, build_engine, check_target
from .engine.build import step
from .errors import PlanError
from .models import load_info, load_model, parse_dtype
from .models.load import LoadedModel, dtype_name
from .planning.rules import PlanSettings, make_plan
from .planning.shapes import ShapePlan, parse_range


def plan(model, seq: str, batch: str = "1", device: str = "cpu", dtype: str = "float32",
         **settings) -> ShapePlan:
    """The ShapePlan for ``model``: a name (its config only, no weights) or a model already loaded
    (``models.load_model``: its own config); check ``plan.ok`` / ``plan.refused``.

    ``settings`` are PlanSettings fields: backend, attn, kernels, graph_batches, prefill_bucket, ...
    """
    attn = settings.pop("attn", "sdpa")
    if attn not in ("sdpa", "eager"):
        raise PlanError(f"unknown attention implementation {attn!r}.", "use --attn sdpa or --attn eager.")
    dtype = dtype_name(parse_dtype(dtype))
    info = model.info() if isinstance(model, LoadedModel) else load_info(model, attn)
    return make_plan(info, PlanSettings(seq=parse_range(seq, "seq"), batch=parse_range(batch, "batch"),
                                                          attn=attn, device=device, dtype=dtype, **settings))


def require_ok(p: ShapePlan) -> None:
    if not p.ok:
        r = p.refused[0]
        raise PlanError(f"cannot serve this request: {r.message}", r.fix)


def compile(model: str, seq: str, batch: str = "1", backend: str = "auto", device: str = "cpu",
            dtype: str = "float32", out: str | Path | None = None, force: bool = False, progress=None,
            loaded=None, **plan_settings) -> Engine:
    """Plan, build and (with ``out``) save an engine; raises PlanError when the request cannot be served.

    Everything cheap is checked first (the plan, the backend, the device, the output directory), so a
    mistake costs no compile time. ``progress(what)`` is an optional context-manager factory per step.
    ``loaded``: the model already loaded (``models.load_model``); the plan follows its config.
    """
    device = resolve_device(device)
    p = plan(loaded if loaded is not None else model, seq, batch, device=device, dtype=dtype, backend=backend,
             **plan_settings)
    require_ok(p)
    get_backend(p.runtime.backend)
    if out is not None:
        check_target(Path(out), force)
    lm = loaded
    if lm is None:
        with step(progress, f"load {model}"):
            lm = load_model(model, p.attn_implementation, parse_dtype(p.dtype))
    engine = build_engine(lm, p, CompileSettings(backend=p.runtime.backend, device=device, dtype=p.dtype),
                          out=out, progress=progress)
    if out is not None:
        with step(progress, f"save {out}"):
            engine.save(out, force=force)
    return engine


def load(directory: str | Path, device: str | None = None) -> Engine:
    """An engine directory, checked and ready to generate, without compiling anything."""
    return Engine.load(directory, device=device)


def verify(engine, settings=None, on_result=None):
    """Prefill sweep, decode steps and greedy tokens against the eager Hugging Face model."""
    from .verification import VerifySettings, verify_engine

    if not isinstance(engine, Engine):
        engine = Engine.load(engine)
    return verify_engine(engine, settings or VerifySettings(), on_result=on_result)
