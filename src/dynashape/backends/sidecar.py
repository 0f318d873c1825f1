"""What the backends share. Sidecars: a small JSON file beside a deployable artifact saying what it
was built for (the plan's fingerprint, the torch version, the device type), so a load can refuse an
artifact that does not match its engine's plan instead of failing deep inside a runtime (aoti, onnx,
tensorrt). ``copy_missing``: a carried compile cache into this process's cache (eager, inductor);
``kept_env``: environment variables a build sets for its compile caches, restored after it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import EngineError

REBUILD = "rebuild it: dynashape compile MODEL --seq MIN:MAX --batch MIN:MAX --backend {backend} -o DIR --force"


def plan_fingerprint(plan) -> str:
    """sha256 of the plan facts an artifact bakes in: graph ranges, inputs, dtype, model shape."""
    keys = ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd")
    rt = plan.runtime
    facts = {"graph": {k: r.to_json() for k, r in sorted(plan.graph.items())},
             "inputs": [[s.name, s.dtype, list(s.dims)] for s in plan.inputs],
             "graphs": {g: [[s.name, s.dtype, list(s.dims)] for s in specs] for g, specs in sorted(plan.graphs.items())},
             "runtime": [rt.kind, rt.cache_slots, rt.cache_len, rt.vocab_pad, rt.attention, rt.kernels],
             "dtype": plan.dtype, "attn": plan.attn_implementation,
             "model": {k: plan.model.get(k) for k in keys}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def torch_version() -> str:
    return torch.__version__.split("+")[0]


def write_sidecar(path: Path, backend: str, plan, settings, **extra) -> None:
    data = {"backend": backend, "plan_sha256": plan_fingerprint(plan), "torch": torch_version(),
            "device_type": torch.device(settings.device).type, "dtype": settings.dtype,
            "graph": {k: r.text() for k, r in plan.graph.items()}, **extra}
    Path(path).write_text(json.dumps(data, indent=2))


def read_sidecar(directory: Path, name: str, backend: str, plan) -> dict:
    """The sidecar ``name`` of ``backend``, checked against the directory's plan; EngineError if not."""
    directory = Path(directory)
    rebuild = REBUILD.format(backend=backend)
    path = directory / name
    if not path.is_file():
        found = sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
        raise EngineError(f"{directory} holds no {backend} artifact ({name} is missing; it has "
                          f"{', '.join(found)}): it was built by another backend.", rebuild)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EngineError(f"{path} is corrupt.", rebuild) from None
    if data.get("backend") != backend:
        raise EngineError(f"{path} was written by backend {data.get('backend')!r}, not {backend!r}.", rebuild)
    if data.get("plan_sha256") != plan_fingerprint(plan):
        built = ", ".join(f"{k} {v}" for k, v in data.get("graph", {}).items())
        now = ", ".join(f"{k} {r.text()}" for k, r in plan.graph.items())
        raise EngineError(f"{directory}/plan.json does not match its {backend} artifact (artifact built for "
                          f"{built}; plan.json says {now}).", rebuild)
    return data


def copy_missing(src: Path, dst: Path) -> None:
    """Copy the files of ``src`` that ``dst`` lacks (compile caches are content-addressed: a file that
    is there already is the same file), so a load does not rewrite a cache it already filled."""
    for f in Path(src).rglob("*"):
        target = Path(dst) / f.relative_to(src)
        if f.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


@contextlib.contextmanager
def kept_env(*names: str):
    """Restore environment variables a backend's build sets for its compile caches."""
    old = {n: os.environ.get(n) for n in names}
    try:
        yield
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
