"""``aoti``: prefill and decode as AOTInductor packages (``prefill.pt2``, ``decode.pt2``).

Each graph is exported with ``torch.export`` (the plan's dynamic batch and length; the cache as
static inputs updated in place) and compiled by AOTInductor into a shared library that a fresh
process maps and runs without compiling anything (on the CPU, torch compiles its tiny
instruction-set probes once per Inductor cache). Packages are tied to the torch version and device
type that built them: the sidecar ``aoti.json`` records both and the plan's fingerprint, and a load
that does not match is refused with the rebuild command.

torch 2.11's package loader was seen to crash (SIGSEGV) on an H100/H200 machine, so the build
loads and calls the packages once in a child process first: a crash there becomes a one-line
BackendError instead of killing the caller (``probe_package``).
https://pytorch.org/docs/stable/torch.compiler_aot_inductor.html
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import torch

from ..errors import BackendError, EngineError
from ..graphs import GENERATION_GRAPHS, export_generation
from .sidecar import REBUILD, read_sidecar, torch_version, write_sidecar

NAME = "aoti"
KIND = "generation"
SIDECAR = "aoti.json"


class Runners(dict):
    packages: dict[str, Path]
    workdir: str | None = None


def _device_index(device: str) -> int:
    d = torch.device(device)
    return (d.index or 0) if d.type == "cuda" else -1


def _load_package(path: Path, settings):
    return torch._inductor.aoti_load_package(str(path), device_index=_device_index(settings.device))


def _bind(loaded: dict) -> Runners:
    # AOTInductor runners take a flat list of inputs; the cache inputs are updated in place
    runners = Runners({name: (lambda m: lambda *a: m(*a))(m) for name, m in loaded.items()})
    return runners


# Loads every package in a child process and calls it once: a crash there must be our error.
_PROBE = r"""
import sys, torch
from dynashape.planning.shapes import ShapePlan
import json
plan = ShapePlan.from_json(json.load(open(sys.argv[1])))
from dynashape.graphs import generation_examples
dev = sys.argv[2]
r = plan.runtime
shape = (r.cache_slots, plan.model["n_head"], r.cache_len, plan.model["n_embd"] // plan.model["n_head"])
dtype = getattr(torch, plan.dtype)
k, v = ([torch.zeros(shape, dtype=dtype, device=dev) for _ in range(plan.model["n_layer"])] for _ in range(2))
ex = generation_examples(plan, dev)
for name, path in zip(sys.argv[3::2], sys.argv[4::2]):
    m = torch._inductor.aoti_load_package(path, device_index=int(sys.argv[-1]))
    m(*ex[name], k, v)
"""


def probe_packages(packages: dict[str, Path], plan, settings, workdir: Path) -> None:
    """Load and call each package once in a child process; BackendError if that child crashes or fails."""
    plan_file = workdir / "plan.json"
    plan_file.write_text(plan.dumps())
    args = [a for name, p in packages.items() for a in (name, str(p))]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(plan_file), settings.device, *args,
                           str(_device_index(settings.device))], env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    how = f"crashed ({signal.Signals(-proc.returncode).name})" if proc.returncode < 0 else "failed"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    crash = next((i for i, ln in enumerate(lines) if ln.startswith("Current thread")), None)  # faulthandler
    last = (lines[crash + 1] if crash is not None and crash + 1 < len(lines) else (lines or [""])[-1])[:160]
    raise BackendError(f"the AOTInductor packages compiled, but loading them {how} on this machine (torch "
                       f"{torch.__version__}, {settings.device}): {last}",
                       "use --backend eager or inductor here, or a torch version whose AOTInductor loader works.")


def build(plan, settings, model=None, program=None, hf_model=None) -> Runners:
    workdir = Path(tempfile.mkdtemp(prefix="dynashape-aoti-"))
    k, v = model.new_cache(plan.runtime.cache_slots, plan.runtime.cache_len)
    packages = {}
    try:
        for name in GENERATION_GRAPHS:
            ep = export_generation(model, plan, name, k, v)
            packages[name] = workdir / f"{name}.pt2"
            try:
                torch._inductor.aoti_compile_and_package(ep, package_path=str(packages[name]))
            except Exception as e:  # compiler missing, unsupported op: say which, keep the cause
                first = (str(e).strip().splitlines() or [""])[0][:160]
                raise BackendError(f"AOTInductor could not compile the {name} graph ({type(e).__name__}: {first}).",
                                   "check that a C++ compiler (g++) is installed, or use --backend eager.") from None
        probe_packages(packages, plan, settings, workdir)
        runners = _bind({name: _load_package(p, settings) for name, p in packages.items()})
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    runners.packages, runners.workdir, runners.plan, runners.settings = packages, str(workdir), plan, settings
    weakref.finalize(runners, shutil.rmtree, str(workdir), True)
    return runners


def save(runners, directory) -> dict[str, str]:
    directory = Path(directory)
    files = {}
    for name, path in runners.packages.items():
        shutil.copyfile(path, directory / path.name)
        files[f"{name}_package"] = path.name
    write_sidecar(directory / SIDECAR, NAME, runners.plan, runners.settings)
    files["aoti_meta"] = SIDECAR
    return files


def load(directory, plan, settings, model=None, program=None) -> Runners:
    directory = Path(directory)
    side = read_sidecar(directory, SIDECAR, NAME, plan)
    rebuild = REBUILD.format(backend=NAME)
    if side.get("torch", "").split(".")[:2] != torch_version().split(".")[:2]:
        raise EngineError(f"{directory} holds AOTInductor packages built with torch {side.get('torch')}; this is "
                          f"torch {torch_version()}, and packages load only on the torch that built them.", rebuild)
    want = torch.device(settings.device).type
    if side.get("device_type") != want:
        raise EngineError(f"{directory} holds AOTInductor packages compiled for {side.get('device_type')}, "
                          f"and it was asked to run on {want}.", f"load it with device {side.get('device_type')}, "
                          "or " + rebuild.replace("rebuild it", "rebuild it for this device"))
    loaded = {}
    for name in GENERATION_GRAPHS:
        try:
            loaded[name] = _load_package(directory / f"{name}.pt2", settings)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise EngineError(f"{directory}/{name}.pt2 could not be loaded ({type(e).__name__}: {first}).",
                              rebuild) from None
    return _bind(loaded)
