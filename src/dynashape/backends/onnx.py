"""``onnx``: ONNX graphs with named dynamic axes, run by onnxruntime, plus TensorRT build profiles.

Two graphs are written, each from a ``torch.export`` program whose dynamic dimensions come from the
plan (so the ONNX traps in DESIGN.md cannot happen: every example size is >= 2 and inside its range,
and inputs that must be equal share one named axis):

    model.onnx   no cache:  input_ids, attention_mask (batch, seq)          -> logits (batch, seq, V)
    decode.onnx  one step:  input_ids (batch, 1), attention_mask (batch, past+1),
                            past_key_values.{i}.key/value (batch, H, past, D)
                            -> logits (batch, 1, V), present.{i}.key/value (batch, H, past+1, D)

``trt_profile.json`` / ``trt_profile.txt`` hold each graph's TensorRT optimisation profile
(``trtexec --minShapes/--optShapes/--maxShapes``), chosen jointly from the plan's dimensions so every
profile point keeps the model's shape relations: inputs sharing a dimension have the same size,
the decode mask is past+1, and past+1 never exceeds n_positions.
https://onnxruntime.ai/docs/  https://docs.nvidia.com/deeplearning/tensorrt/ (trtexec)
"""
from __future__ import annotations

import inspect
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.export import Dim

from ..errors import BackendError, EngineError
from ..graphs import dynamic_shapes, example_inputs
from ..planning.shapes import Range
from .sidecar import REBUILD, read_sidecar, write_sidecar

NAME = "onnx"
KIND = "forward"
MODEL_FILE, DECODE_FILE = "model.onnx", "decode.onnx"
PROFILE_JSON, PROFILE_TXT, SIDECAR = "trt_profile.json", "trt_profile.txt", "onnx.json"
INSTALL = "pip install dynashape[onnx]"
PAST_MIN = 2             # past sizes 0 and 1 are specialised by torch; shorter prompts use model.onnx


def require_onnx():
    """onnxruntime (and onnx) or a one-line BackendError naming the install command."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        missing = getattr(e, "name", None) or "onnxruntime"
        raise BackendError(f"the onnx backend needs {missing}, which is not installed.", INSTALL) from None
    return onnxruntime


# ---- graph specs and TensorRT profiles ----------------------------------------------------------

@dataclass
class GraphSpec:
    """A graph's dimensions and, per input/output, each axis: a dim name, 'past+1', or a fixed size."""

    file: str
    dims: dict[str, Range]
    inputs: dict[str, list]
    outputs: dict[str, list]


def nocache_spec(plan) -> GraphSpec:
    inputs = {s.name: list(s.dims) for s in plan.inputs}
    return GraphSpec(MODEL_FILE, dict(plan.graph), inputs, {"logits": ["batch", "seq", plan.model["vocab_size"]]})


def decode_spec(plan) -> tuple[GraphSpec | None, str]:
    """The decode graph for this plan, or None and the reason there is none."""
    m = plan.model
    h, d = m["n_head"], m["n_embd"] // m["n_head"]
    top = min(plan.graph["seq"].max, m["n_positions"]) - 1  # past + 1 new token <= longest sequence
    if top - PAST_MIN < 2:
        return None, (f"--seq max {plan.graph['seq'].max} leaves no past range of at least 3 sizes "
                      f"({PAST_MIN}..{top}) for a decode graph.")
    seq_opt = plan.graph["seq"].opt or plan.graph["seq"].max
    past = Range(PAST_MIN, top, min(max(seq_opt - 1, PAST_MIN), top))
    kv, kv_out = ["batch", h, "past", d], ["batch", h, "past+1", d]
    names = [f"{i}.{k}" for i in range(m["n_layer"]) for k in ("key", "value")]
    inputs = {"input_ids": ["batch", 1], "attention_mask": ["batch", "past+1"]}
    inputs.update({f"past_key_values.{n}": kv for n in names})
    outputs = {"logits": ["batch", 1, m["vocab_size"]]}
    outputs.update({f"present.{n}": kv_out for n in names})
    return GraphSpec(DECODE_FILE, {"batch": plan.graph["batch"], "past": past}, inputs, outputs), ""


def _axis_size(axis, point: dict[str, int]) -> int:
    if isinstance(axis, int):
        return axis
    name, _, plus = str(axis).partition("+")
    return point[name] + (int(plus) if plus else 0)


def profile_points(spec: GraphSpec) -> dict[str, dict[str, int]]:
    """min/opt/max values of every dimension, chosen together (one point = one consistent shape set)."""
    pick = {"min": lambda r: r.min, "opt": lambda r: r.opt if r.opt is not None else r.min, "max": lambda r: r.max}
    return {p: {d: f(r) for d, r in spec.dims.items()} for p, f in pick.items()}


def trt_profile(spec: GraphSpec) -> dict:
    points = profile_points(spec)
    shapes = {p: {name: [_axis_size(a, pt) for a in axes] for name, axes in spec.inputs.items()}
              for p, pt in points.items()}
    args = " ".join(f"--{p}Shapes=" + ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes[p].items())
                    for p in ("min", "opt", "max"))
    return {"file": spec.file, "dims": {d: r.to_json() for d, r in spec.dims.items()},
            "axes": spec.inputs, "points": points, "shapes": shapes, "trtexec": args}


def profile_violations(profile: dict, n_positions: int) -> list[str]:
    """Every shape relation a profile point breaks (empty when the profile is consistent)."""
    bad = []
    for point, shapes in profile["shapes"].items():
        seen: dict[str, set[int]] = {}
        for name, shape in shapes.items():
            for axis, size in zip(profile["axes"][name], shape):
                if isinstance(axis, int):
                    if size != axis:
                        bad.append(f"{point}: {name} has {size} where the graph fixes {axis}")
                    continue
                dim, _, plus = str(axis).partition("+")
                seen.setdefault(dim, set()).add(size - (int(plus) if plus else 0))
        for dim, sizes in seen.items():
            r = Range.from_json(profile["dims"][dim])
            if len(sizes) > 1:
                bad.append(f"{point}: inputs disagree on {dim} ({sorted(sizes)})")
            elif min(sizes) not in r:
                bad.append(f"{point}: {dim} {min(sizes)} is outside {r.min}..{r.max}")
        longest = max([*seen.get("seq", {0}), *(p + 1 for p in seen.get("past", set()))])
        if longest > n_positions:
            bad.append(f"{point}: sequence {longest} exceeds n_positions {n_positions}")
    return bad


# ---- export -------------------------------------------------------------------------------------

def flat_cache(cache) -> list[torch.Tensor]:
    """[k0, v0, k1, v1, ...] from a DynamicCache (transformers 4.x or 5.x) or a legacy tuple."""
    if isinstance(cache, (tuple, list)):
        return [t for layer in cache for t in layer[:2]]
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return [t for k, v in zip(cache.key_cache, cache.value_cache) for t in (k, v)]


def cache_kwarg(model) -> str:
    """transformers >= 5.24 names the cache argument ``cache``; earlier ones ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class DecodeStep(torch.nn.Module):
    """One cached decode step: ids (B, 1), mask (B, P+1), past 2L x (B, H, P, D) -> logits, presents."""

    def __init__(self, model):
        super().__init__()
        self.m = model
        self.n_layer = model.config.n_layer
        self.cache_kw = cache_kwarg(model)

    def forward(self, input_ids, attention_mask, past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        for i in range(self.n_layer):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, return_dict=True,
                     **{self.cache_kw: cache})
        present = out.get("past_key_values")
        return (out.logits, *flat_cache(present if present is not None else out.get("cache")))


def _decode_example(spec: GraphSpec, plan) -> int:
    """A past size strictly inside its range, unlike every other size in the graph."""
    past = spec.dims["past"]
    m = plan.model
    avoid = {plan.examples["batch"], m["n_head"], m["n_embd"] // m["n_head"]}
    avoid |= {a - 1 for a in avoid}
    for cand in sorted(range(past.min + 1, past.max), key=lambda c: abs(c - past.opt)):
        if cand not in avoid:
            return cand
    return past.min + 1


def export_decode(model, plan, spec: GraphSpec, device) -> tuple[torch.export.ExportedProgram, dict]:
    m = plan.model
    b, p = plan.examples["batch"], _decode_example(spec, plan)
    h, d = m["n_head"], m["n_embd"] // m["n_head"]
    dtype = next(model.parameters()).dtype
    kwargs = {"input_ids": torch.randint(0, m["vocab_size"], (b, 1), device=device),
              "attention_mask": torch.ones(b, p + 1, dtype=torch.long, device=device),
              "past": [torch.randn(b, h, p, d, device=device, dtype=dtype) for _ in range(2 * m["n_layer"])]}
    br, pr = spec.dims["batch"], spec.dims["past"]
    batch = getattr(Dim, "STATIC", None) if br.static else Dim("batch", min=br.min, max=br.max)
    past = Dim("past", min=pr.min, max=pr.max)
    shapes = {"input_ids": {0: batch}, "attention_mask": {0: batch, 1: past + 1},
              "past": [{0: batch, 2: past} for _ in kwargs["past"]]}
    with torch.no_grad():
        ep = torch.export.export(DecodeStep(model).eval(), (), kwargs=kwargs, dynamic_shapes=shapes, strict=False)
    return ep, {"kwargs": kwargs, "shapes": shapes}


def _to_onnx(program, kwargs, shapes, spec: GraphSpec, path: Path) -> None:
    log = logging.getLogger("torch.onnx")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (), kwargs=kwargs, dynamo=True, verbose=False,
                                             input_names=list(spec.inputs), output_names=list(spec.outputs),
                                             dynamic_shapes=shapes)
            big = sum(t.numel() * t.element_size() for t in program.state_dict.values()) > (1 << 30)
            onnx_program.save(str(path), external_data=big)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise BackendError(f"ONNX export of {spec.file} failed ({type(e).__name__}: {first}).",
                           "use --backend aoti or inductor, or report this with `dynashape doctor --json`.") from None
    finally:
        log.setLevel(old)
    _name_axes(path, spec)


def _name_axes(path: Path, spec: GraphSpec) -> None:
    """Make every dynamic axis carry the plan's name (older exporters write s0, s1, ...)."""
    import re

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    rename = {}
    for value in model.graph.input:
        for axis, dim in zip(spec.inputs.get(value.name, []), value.type.tensor_type.shape.dim):
            if isinstance(axis, str) and "+" not in axis and dim.dim_param and dim.dim_param != axis:
                rename[dim.dim_param] = axis
    if not rename:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, rename)) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda mt: rename[mt.group(1)], dim.dim_param).replace(" ", "")
    onnx.save(model, str(path))


# ---- runner -------------------------------------------------------------------------------------

def _session(path: Path, settings):
    ort = require_onnx()
    available = ort.get_available_providers()
    cuda = torch.device(settings.device).type == "cuda" and "CUDAExecutionProvider" in available
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxRunner:
    """Runs model.onnx for the Engine (torch in, torch out) and decode.onnx through ``decode``."""

    def __init__(self, folder: Path, files: list[str], plan, settings, workdir: str | None = None):
        self.folder, self.plan, self.settings, self._workdir = Path(folder), plan, settings, workdir
        self.files = list(files)  # this backend's artifacts inside folder
        self.session = _session(self.folder / MODEL_FILE, settings)
        self.providers = self.session.get_providers()
        self.decode_graph, self.no_decode_reason = decode_spec(plan)
        self._decode_session = None

    def __call__(self, **inputs) -> torch.Tensor:
        feeds = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(logits).to(self.settings.device)

    def decode(self, input_ids, attention_mask, past: list) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One cached step: ids (B, 1), mask (B, P+1), past [k0, v0, ...] (B, H, P, D) -> logits, presents."""
        spec = self.decode_graph
        if spec is None:
            raise EngineError(f"this engine has no decode graph: {self.no_decode_reason}", "rebuild with a longer --seq.")
        b, p = input_ids.shape[0], past[0].shape[2]
        br, pr = spec.dims["batch"], spec.dims["past"]
        if p not in pr or not (b in br or b < br.min):
            raise EngineError(f"decode batch {b}, past {p} is outside the decode graph's batch {br.min}..{br.max}, "
                              f"past {pr.min}..{pr.max}.", "run shorter prompts through the no-cache graph.")
        pad = max(br.min - b, 0)  # dummy rows: rows never mix
        tensors = [input_ids, attention_mask, *past]
        if pad:
            tensors = [torch.cat([t, t[:1].expand(pad, *t.shape[1:])]) for t in tensors]
        if self._decode_session is None:
            self._decode_session = _session(self.folder / DECODE_FILE, self.settings)
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(spec.inputs, tensors)}
        outs = [torch.from_numpy(o[:b]).to(self.settings.device) for o in self._decode_session.run(None, feeds)]
        return outs[0], outs[1:]

    def __del__(self):
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)


# ---- protocol -----------------------------------------------------------------------------------

def _compile(program, plan, settings, model=None) -> OnnxRunner:
    require_onnx()
    workdir = Path(tempfile.mkdtemp(prefix="dynashape-onnx-"))
    try:
        main = nocache_spec(plan)
        _to_onnx(program, example_inputs(plan, settings.device), dynamic_shapes(plan), main, workdir / MODEL_FILE)
        profiles = {"model": trt_profile(main)}
        spec, reason = decode_spec(plan)
        if spec is not None and model is None:
            spec, reason = None, "no Hugging Face model was given to export the decode graph from."
        if spec is not None:
            ep, ex = export_decode(model, plan, spec, settings.device)
            _to_onnx(ep, ex["kwargs"], ex["shapes"], spec, workdir / DECODE_FILE)
            profiles["decode"] = trt_profile(spec)
        doc = {"format": 1, "note": "TensorRT optimisation profiles: every point keeps shared dims equal, the "
               "decode mask = past + 1, and past + 1 <= n_positions.", "no_decode_reason": reason or None,
               "graphs": profiles}
        (workdir / PROFILE_JSON).write_text(json.dumps(doc, indent=2))
        (workdir / PROFILE_TXT).write_text("".join(f"trtexec --onnx={p['file']} {p['trtexec']}\n"
                                                   for p in profiles.values()))
        write_sidecar(workdir / SIDECAR, NAME, plan, settings, decode=spec is not None,
                      files=sorted(f.name for f in workdir.iterdir()))
        return OnnxRunner(workdir, sorted(f.name for f in workdir.iterdir()), plan, settings, str(workdir))
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def save(runners, directory) -> dict[str, str]:
    runner = runners["forward"]
    for name in runner.files:
        shutil.copyfile(runner.folder / name, Path(directory) / name)
    return {f"onnx:{name}": name for name in runner.files}


def _load(directory, program, plan, settings) -> OnnxRunner:
    require_onnx()
    directory = Path(directory)
    side = read_sidecar(directory, SIDECAR, NAME, plan)
    missing = [f for f in side.get("files", []) if not (directory / f).is_file()]
    if missing:
        raise EngineError(f"{directory} is missing {', '.join(missing)}.", REBUILD.format(backend=NAME))
    try:
        return OnnxRunner(directory, [*side.get("files", []), SIDECAR], plan, settings)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise EngineError(f"{directory}/{MODEL_FILE} could not be loaded by onnxruntime ({type(e).__name__}: "
                          f"{first}).", REBUILD.format(backend=NAME)) from None


def build(plan, settings, model=None, program=None, hf_model=None) -> dict:
    return {"forward": _compile(program, plan, settings, model=hf_model)}


def load(directory, plan, settings, model=None, program=None) -> dict:
    return {"forward": _load(directory, program, plan, settings)}
