"""What one generation-bench run needs: the engine (loaded, or compiled in memory from a model), the
Hugging Face model with the engine's weights, machine facts with the copy bandwidth, build/load times."""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from ..backends import resolve_device
from ..models.load import parse_dtype
from .generate import weight_bytes
from .machine import machine_facts


def _engine(s, device):
    from .. import api
    from ..engine import Engine
    from ..engine.store import is_engine_dir

    if is_engine_dir(s.target):
        t0 = time.perf_counter()
        engine = Engine.load(s.target)
        load_s = time.perf_counter() - t0
        return engine, {"source": "loaded", "path": s.target, "load_s": round(load_s, 3),
                        "load_parts_s": engine.meta.get("load_s"), "build_s": engine.meta.get("build_s")}
    t0 = time.perf_counter()
    seq = f"1:{max(s.prompt_lens) + s.new_tokens}"
    engine = api.compile(s.target, seq=seq, batch=f"1:{max(s.batches)}", backend=s.backend, device=str(device),
                         dtype=s.dtype)
    return engine, {"source": "compiled in memory", "build_s": round(time.perf_counter() - t0, 3)}


def bench_setup(s) -> dict:
    engine, facts = _engine(s, torch.device(resolve_device(s.device)))
    device = engine.device
    t0 = time.perf_counter()
    gen = engine.generator                                    # cache + decode graph captures
    facts.update(ready_s=round(time.perf_counter() - t0, 3), backend=engine.backend, plan=asdict(engine.plan.runtime),
                 dtype=engine.settings.dtype)
    hf = engine.reference_model(parse_dtype(engine.settings.dtype)).to(device).eval()
    return {"engine": engine, "hf": hf, "device": device, "generator": gen, "engine_facts": facts,
            "facts": machine_facts(device, engine.settings.dtype, bandwidth=True), "wbytes": weight_bytes(engine.model)}
