"""Run a test module's ``check_*`` functions in Triton's interpreter, in child Pythons.

Why a child process: TRITON_INTERPRET=1 must be set before ``import triton`` (triton decorates its own
standard library, ``tl.sum``, ``tl.sigmoid``, at import time), so it cannot be switched on inside the
pytest process without changing every other test that imports triton (GPU tests would run
interpreted). A module's ``interpreted`` fixture calls ``run_interpreted``: every selected test of that
module that uses the fixture has its ``check_<name>`` (the test's name without ``test_``, called with
the test's parameters) run in at most two children, each importing torch and triton once; each test
then reports its own check's result, with the child's traceback on failure.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest


def _interpreter_numpy_shim():
    """triton 3.6's interpreter turns a scalar into an int with int(<1-element array>), which numpy >= 2.4
    refuses; loops with run-time bounds (decode_attention's per-row chunk) need it. Child process only."""
    import triton.runtime.interpreter as interp
    patch = interp._patch_lang_tensor

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
    interp._patch_lang_tensor = patched


def child_main(module_path: str, cases_path: str, results_path: str) -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    _interpreter_numpy_shim()
    spec = importlib.util.spec_from_file_location("kernel_checks", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = {}
    for nodeid, (name, params) in json.loads(Path(cases_path).read_text()).items():
        t0 = time.perf_counter()
        try:
            getattr(module, f"check_{name}")(**params)
            results[nodeid] = {"error": None}
        except Exception:                                          # noqa: BLE001 - reported by the test
            results[nodeid] = {"error": traceback.format_exc()}
        results[nodeid]["seconds"] = round(time.perf_counter() - t0, 2)
    Path(results_path).write_text(json.dumps(results))


class Interpreted:
    def __init__(self, results: dict, failure: str):
        self.results, self.failure = results, failure

    def assert_passed(self, node) -> None:
        got = self.results.get(node.nodeid)
        if got is None:
            pytest.fail(f"the interpreter child gave no result for this check: {self.failure}", pytrace=False)
        if got["error"]:
            pytest.fail(f"in the TRITON_INTERPRET=1 child:\n{got['error']}", pytrace=False)


CHILD = "import sys, interpreter; interpreter.child_main(*sys.argv[1:])"


def _selected_checks(session, module_path: str) -> list[tuple[str, tuple[str, dict]]]:
    """(node id, (check name, params)) of the module's selected tests that use ``interpreted``."""
    return [(item.nodeid, (item.originalname.removeprefix("test_"), item.callspec.params if hasattr(item, "callspec") else {}))
            for item in session.items if item.module.__file__ == module_path and "interpreted" in item.fixturenames]


def _run_children(module_path: str, checks: list, tmp: Path) -> tuple[dict, str]:
    """One child per CPU core (at most 2: the interpreter is single-threaded Python), checks dealt round-robin."""
    here = Path(__file__).resolve().parent
    path = [str(here.parent / "src"), str(here), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(path)}
    n = max(1, min(2, os.cpu_count() or 1, len(checks)))
    procs = []
    for i in range(n):
        (tmp / f"cases{i}.json").write_text(json.dumps(dict(checks[i::n])))
        with open(tmp / f"log{i}.txt", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-c", CHILD, module_path, str(tmp / f"cases{i}.json"),
                                           str(tmp / f"results{i}.json")], env=env, stdout=log, stderr=subprocess.STDOUT))
    results, failures = {}, []
    for i, proc in enumerate(procs):
        if proc.wait(timeout=1200):
            failures.append(f"child exit {proc.returncode}:\n{(tmp / f'log{i}.txt').read_text()[-4000:]}")
        if (tmp / f"results{i}.json").exists():
            results.update(json.loads((tmp / f"results{i}.json").read_text()))
    return results, "\n".join(failures)


def run_interpreted(session, module_path: str) -> Interpreted:
    with tempfile.TemporaryDirectory() as tmp:
        return Interpreted(*_run_children(module_path, _selected_checks(session, module_path), Path(tmp)))


def tiny_pair(seed: int, dtype: str, **fused):
    """random:tiny with perturbed weights (no exact ties) as two lean models: the torch reference and one
    configured with ``fused`` (kernels="fused", prefill=...), both padding the vocabulary to 64."""
    import torch

    from dynashape.models import load_model
    from dynashape.models.gpt2 import GPT2
    lm = load_model("random:tiny")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in lm.model.parameters():
            t.add_(torch.randn(t.shape, generator=g) * 0.05)
    dt = getattr(torch, dtype)
    return (GPT2.from_hf(lm.model, dtype=dt).configure(vocab_pad=64),
            GPT2.from_hf(lm.model, dtype=dt).configure(vocab_pad=64, attention="kernel", **fused))
