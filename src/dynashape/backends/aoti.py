"""``aoti``: an AOTInductor package (``aoti.pt2``) built from the exported program.

The exported program already carries the plan's dynamic ranges (batch and seq, shared by every
input), so AOTInductor compiles one shared library that serves the whole graph range; sizes the plan
pads are padded by the Engine before they get here. Loading the package in a fresh process maps the
compiled library and its weights and runs without compiling the model again (on CPU, torch still
compiles its tiny instruction-set probes once per Inductor cache directory).

AOTInductor packages are tied to the torch version and device type that built them, so the
backend writes a small sidecar (``aoti.json``) with those facts and the plan's fingerprint, and
refuses to load a package whose plan, torch version or device does not match.
https://pytorch.org/docs/stable/torch.compiler_aot_inductor.html

The sidecar helpers here (``plan_fingerprint``, ``write_sidecar``, ``read_sidecar``) are shared by
the deployable backends (aoti, onnx, tensorrt).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import BackendError, EngineError
from ..graphs import example_inputs

NAME = "aoti"
PACKAGE = "aoti.pt2"
SIDECAR = "aoti.json"
REBUILD = "rebuild it: dynashape compile MODEL --seq MIN:MAX --batch MIN:MAX --backend {backend} -o DIR --force"


# ---- sidecar: what an artifact was built for (shared by aoti, onnx, tensorrt) ---------------------

def plan_fingerprint(plan) -> str:
    """sha256 of the plan facts an artifact bakes in: graph ranges, inputs, dtype, model shape."""
    keys = ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd")
    facts = {"graph": {k: r.to_json() for k, r in sorted(plan.graph.items())},
             "inputs": [[s.name, s.dtype, list(s.dims)] for s in plan.inputs],
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


# ---- the backend ------------------------------------------------------------------------------

class AotiRunner:
    """Calls the loaded AOTInductor model with the plan's inputs; returns logits (B, T, V)."""

    def __init__(self, compiled, package: Path, plan, settings, workdir: str | None = None):
        self.compiled = compiled
        self.package = Path(package)
        self.plan = plan
        self.settings = settings
        self._workdir = workdir  # temporary build directory, removed with the runner

    def __call__(self, **inputs) -> torch.Tensor:
        out = self.compiled(**inputs)
        return out[0] if isinstance(out, (list, tuple)) else out

    def __del__(self):
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)


def _device_index(device: str) -> int:
    d = torch.device(device)
    return d.index if d.type == "cuda" and d.index is not None else -1


def _load_package(path: Path, settings):
    return torch._inductor.aoti_load_package(str(path), device_index=_device_index(settings.device))


# Loads the package in a child process and calls it once: torch 2.11's loader was seen to segfault on an
# H200 machine (bench/results/h200_aoti_gpt2.json); a crash must become our error, not kill the caller.
_PROBE = r"""
import sys, torch
names, (b, t), device = sys.argv[3].split(","), map(int, sys.argv[4].split("x")), sys.argv[5]
model = torch._inductor.aoti_load_package(sys.argv[1], device_index=int(sys.argv[2]))
ids = torch.zeros(b, t, dtype=torch.long, device=device)
feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
         "position_ids": torch.arange(t, device=device).expand(b, t).contiguous()}
model(**{n: feeds[n] for n in names})
"""


def probe_package(package: Path, plan, settings) -> None:
    """Load and call the package once in a child process; BackendError if that child crashes or fails."""
    import os
    import signal
    import subprocess
    import sys

    names = ",".join(s.name for s in plan.inputs)
    shape = f"{plan.examples['batch']}x{plan.examples['seq']}"
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(package), str(_device_index(settings.device)), names,
                           shape, settings.device], env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    how = f"crashed ({signal.Signals(-proc.returncode).name})" if proc.returncode < 0 else "failed"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    crash = next((i for i, ln in enumerate(lines) if ln.startswith("Current thread")), None)  # faulthandler
    last = (lines[crash + 1] if crash is not None and crash + 1 < len(lines) else (lines or [""])[-1])[:160]
    raise BackendError(f"the AOTInductor package compiled, but loading it {how} on this machine (torch "
                       f"{torch.__version__}, {settings.device}): {last}",
                       "use --backend inductor (or onnx) here, or a torch version whose AOTInductor loader works.")


def compile(program, plan, settings) -> AotiRunner:
    workdir = tempfile.mkdtemp(prefix="dynashape-aoti-")
    package = Path(workdir) / PACKAGE
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(package))
    except Exception as e:  # compiler missing, unsupported op: say which, keep the cause
        shutil.rmtree(workdir, ignore_errors=True)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise BackendError(f"AOTInductor could not compile this program ({type(e).__name__}: {first}).",
                           "check that a C++ compiler (g++) is installed, or use --backend inductor.") from None
    try:
        probe_package(package, plan, settings)
    except BackendError:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    runner = AotiRunner(_load_package(package, settings), package, plan, settings, workdir)
    with torch.no_grad():  # prove the package runs at the plan's example sizes before anyone saves it
        runner(**example_inputs(plan, settings.device))
    return runner


def save(runner: AotiRunner, directory) -> dict[str, str]:
    directory = Path(directory)
    shutil.copyfile(runner.package, directory / PACKAGE)
    write_sidecar(directory / SIDECAR, NAME, runner.plan, runner.settings)
    return {"aoti": PACKAGE, "aoti_meta": SIDECAR}


def load(directory, program, plan, settings) -> AotiRunner:
    directory = Path(directory)
    side = read_sidecar(directory, SIDECAR, NAME, plan)
    rebuild = REBUILD.format(backend=NAME)
    if side.get("torch", "").split(".")[:2] != torch_version().split(".")[:2]:
        raise EngineError(f"{directory} holds an AOTInductor package built with torch {side.get('torch')}; this is "
                          f"torch {torch_version()}, and packages load only on the torch that built them.", rebuild)
    want = torch.device(settings.device).type
    if side.get("device_type") != want:
        raise EngineError(f"{directory} holds an AOTInductor package compiled for {side.get('device_type')}, "
                          f"and it was asked to run on {want}.", f"load it with device {side.get('device_type')}, "
                          "or " + rebuild.replace("rebuild it", "rebuild it for this device"))
    try:
        compiled = _load_package(directory / PACKAGE, settings)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise EngineError(f"{directory}/{PACKAGE} could not be loaded ({type(e).__name__}: {first}).", rebuild) from None
    return AotiRunner(compiled, directory / PACKAGE, plan, settings)
