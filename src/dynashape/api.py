"""The library in two calls, for users who do not want the CLI.

    import dynashape
    plan = dynashape.plan("random:gpt2", seq="1:1024", batch="1:8")      # ShapePlan (refusals inside)
    engine = dynashape.compile("random:gpt2", seq="1:1024", batch="1:8", backend="inductor")
    logits = engine(torch.tensor([[464, 3290, 318]]))
    engine.save("engines/gpt2"); engine = dynashape.Engine.load("engines/gpt2")
"""
from __future__ import annotations

from .backends import CompileSettings
from .engine.engine import Engine, build_engine
from .errors import PlanError
from .models import load_info, load_model, parse_dtype
from .models.load import dtype_name
from .planning.rules import PlanSettings, make_plan
from .planning.shapes import ShapePlan, parse_range


def plan(model: str, seq: str, batch: str = "1", **settings) -> ShapePlan:
    """The ShapePlan for ``model`` (config only, no weights); check ``plan.ok`` / ``plan.refused``."""
    attn = settings.pop("attn", "sdpa")
    return make_plan(load_info(model, attn), PlanSettings(seq=parse_range(seq, "seq"), batch=parse_range(batch, "batch"),
                                                          attn=attn, **settings))


def compile(model: str, seq: str, batch: str = "1", backend: str = "inductor", device: str = "cpu",
            dtype: str = "float32", **plan_settings) -> Engine:
    """Plan, export and compile; raises PlanError when the request cannot be served."""
    dtype = dtype_name(parse_dtype(dtype))
    p = plan(model, seq, batch, dtype=dtype, **plan_settings)
    if not p.ok:
        raise PlanError(p.refused[0].message, p.refused[0].fix)
    lm = load_model(model, p.attn_implementation, parse_dtype(dtype))
    return build_engine(lm, p, CompileSettings(backend=backend, device=device, dtype=dtype))
