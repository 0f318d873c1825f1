"""``tensorrt``: Torch-TensorRT (dynamo frontend) over the exported program.

The plan maps to one ``torch_tensorrt.Input(min_shape, opt_shape, max_shape, dtype)`` per graph
input. The points come from ``onnx.trt_profile`` (the same joint choice the ONNX engine's
``trtexec`` profile uses), so inputs that share a dimension get identical ranges and no profile
point breaks a shape relation. Sizes the plan pads (batch or seq 1) are padded by the Engine before
they reach the TensorRT engine, so they never meet "does not satisfy any optimization profile".

Precision: the exported program already holds the weights in the plan's dtype. Torch-TensorRT
versions with ``use_explicit_typing`` build a strongly typed network from it; older ones are told
the dtype through ``enabled_precisions``; the newest (always strongly typed) take neither.

TensorRT cannot be installed on this project's development and CI machines, so this module is
checked there by a contract test with a stand-in ``torch_tensorrt`` (tests/test_backends.py) and
is not exercised against a real TensorRT by this repository's CI.
https://docs.pytorch.org/TensorRT/py_api/dynamo.html
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from ..errors import BackendError, EngineError
from ..graphs import dynamic_shapes, example_inputs
from ..models.load import parse_dtype
from .sidecar import REBUILD, read_sidecar, write_sidecar
from .onnx import nocache_spec, trt_profile

NAME = "tensorrt"
KIND = "forward"
ARTIFACT, SIDECAR = "trt.ep", "tensorrt.json"
INSTALL = "pip install dynashape[tensorrt] (needs an NVIDIA GPU with CUDA; see the README's TensorRT section)."


def require_torch_tensorrt():
    """torch_tensorrt (with TensorRT itself) or a one-line BackendError naming the install command."""
    try:
        import torch_tensorrt
    except ImportError as e:
        what = "Torch-TensorRT" if (getattr(e, "name", "") or "torch_tensorrt").startswith("torch_tensorrt") \
            else f"TensorRT ({e.name})"
        raise BackendError(f"the tensorrt backend needs {what}, which is not installed.", INSTALL) from None
    except Exception as e:  # TensorRT's shared libraries missing or mismatched: OSError, RuntimeError
        first = (str(e).strip().splitlines() or [""])[0][:100]
        raise BackendError(f"Torch-TensorRT is installed but could not load TensorRT ({type(e).__name__}: {first}).",
                           INSTALL) from None
    return torch_tensorrt


def trt_inputs(plan, trt) -> dict:
    """One torch_tensorrt.Input per graph input, shapes from the plan's joint min/opt/max profile."""
    shapes = trt_profile(nocache_spec(plan))["shapes"]
    dtypes = {s.name: getattr(torch, s.dtype) for s in plan.inputs}
    return {name: trt.Input(min_shape=tuple(shapes["min"][name]), opt_shape=tuple(shapes["opt"][name]),
                            max_shape=tuple(shapes["max"][name]), dtype=dtypes[name], name=name)
            for name in shapes["min"]}


def compile_options(settings, compile_fn) -> dict:
    """CompileSettings -> Torch-TensorRT options, following what the installed version accepts."""
    params = inspect.signature(compile_fn).parameters
    options = {"device": torch.device(settings.device), "min_block_size": 1}
    if "truncate_double" in params:
        options["truncate_double"] = True
    if "use_explicit_typing" in params:      # 2.6+: strongly typed from the program's own dtypes
        options["use_explicit_typing"] = True
    elif "enabled_precisions" in params:     # older: name the precision TensorRT may use
        options["enabled_precisions"] = {parse_dtype(settings.dtype)}
    return options


class TrtRunner:
    def __init__(self, module, plan, settings):
        self.module, self.plan, self.settings = module, plan, settings

    def __call__(self, **inputs) -> torch.Tensor:
        out = self.module(**inputs)
        return out[0] if isinstance(out, (list, tuple)) else out


def _check_device(settings) -> None:
    if torch.device(settings.device).type != "cuda":
        raise BackendError(f"the tensorrt backend runs on NVIDIA GPUs, and --device is {settings.device}.",
                           "use --device cuda on a GPU machine, or --backend aoti / onnx on CPU.")
    if not torch.cuda.is_available():
        raise BackendError("the tensorrt backend needs a CUDA GPU, and this machine has none.",
                           "run it on a GPU machine, or use --backend aoti / onnx here.")


def _compile(program, plan, settings) -> TrtRunner:
    trt = require_torch_tensorrt()
    _check_device(settings)
    compile_fn = trt.dynamo.compile
    if "kwarg_inputs" not in inspect.signature(compile_fn).parameters:
        raise BackendError(f"Torch-TensorRT {getattr(trt, '__version__', '?')} cannot take keyword inputs.",
                           "pip install 'torch-tensorrt>=2.4'.")
    module = compile_fn(program, arg_inputs=(), kwarg_inputs=trt_inputs(plan, trt),
                        **compile_options(settings, compile_fn))
    return TrtRunner(module, plan, settings)


def save(runners, directory) -> dict[str, str]:
    runner = runners["forward"]
    trt = require_torch_tensorrt()
    directory = Path(directory)
    kwargs = {"output_format": "exported_program", "arg_inputs": (),
              "kwarg_inputs": example_inputs(runner.plan, runner.settings.device)}
    if "dynamic_shapes" in inspect.signature(trt.save).parameters:  # shared Dims for input_ids/attention_mask
        kwargs["dynamic_shapes"] = dynamic_shapes(runner.plan)
    trt.save(runner.module, str(directory / ARTIFACT), **kwargs)
    write_sidecar(directory / SIDECAR, NAME, runner.plan, runner.settings,
                  torch_tensorrt=getattr(trt, "__version__", "?"))
    return {"tensorrt": ARTIFACT, "tensorrt_meta": SIDECAR}


def _load(directory, program, plan, settings) -> TrtRunner:
    directory = Path(directory)
    side = read_sidecar(directory, SIDECAR, NAME, plan)
    trt = require_torch_tensorrt()
    _check_device(settings)
    have = getattr(trt, "__version__", "?")
    if side.get("torch_tensorrt") != have:
        raise EngineError(f"{directory} was built with Torch-TensorRT {side.get('torch_tensorrt')}; this is {have}, "
                          "and TensorRT engines load only on the version that built them.", REBUILD.format(backend=NAME))
    try:
        module = trt.load(str(directory / ARTIFACT)).module()
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise EngineError(f"{directory}/{ARTIFACT} could not be loaded ({type(e).__name__}: {first}).",
                          REBUILD.format(backend=NAME)) from None
    return TrtRunner(module, plan, settings)


def build(plan, settings, model=None, program=None, hf_model=None) -> dict:
    return {"forward": _compile(program, plan, settings)}


def load(directory, plan, settings, model=None, program=None) -> dict:
    return {"forward": _load(directory, program, plan, settings)}
