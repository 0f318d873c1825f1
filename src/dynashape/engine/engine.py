"""Engine: a compiled graph plus the plan it was built for.

Every call is checked against the plan (dtype, rank, each dimension's range, token ids), sizes the
graph cannot take are padded and the outputs sliced back, and the backend's runner does the work.
An engine directory holds::

    engine.json     format, dynashape version, backend, device, artifacts with sha256, rebuild command
    plan.json       the ShapePlan (single source of truth for what the engine accepts)
    hf_config.json  the model config (to rebuild the eager reference from the program's weights)
    program.pt2     the exported program (every backend keeps it)
    ...             whatever the backend adds

It is written to a temporary directory and renamed into place, so a failed build never leaves a
half-written engine and never replaces a good one unless ``force`` is given.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..backends import BACKENDS, CompileSettings, get_backend
from ..errors import BackendError, DynashapeError, EngineError
from ..models.load import dtype_name, model_from_config, parse_dtype
from ..planning.shapes import ShapePlan

ENGINE_FORMAT = 1
PAD_ID = 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Engine:
    plan: ShapePlan
    backend: str
    runner: Any                       # runner(**inputs) -> logits (B, T, V)
    program: Any                      # torch.export.ExportedProgram
    settings: CompileSettings
    hf_config: dict
    meta: dict = field(default_factory=dict)
    tokenizer: Any = None             # the model's tokenizer, when it had one (kept in tokenizer/)

    # ---- calling ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)

    def rebuild_hint(self, **changes: str) -> str:
        """The compile command that built this engine, with ``changes`` (e.g. seq="1:300") applied."""
        args = dict(self.meta.get("compile_args") or {})
        if not args:
            return "dynashape compile MODEL --seq MIN:MAX --batch MIN:MAX -o DIR --force"
        args.update(changes)
        return rebuild_command(args)

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Raise EngineError for anything this engine was not built for."""
        if not isinstance(input_ids, torch.Tensor):
            raise EngineError(f"input_ids must be a tensor, got {type(input_ids).__name__}.",
                              "pass torch.tensor([[...]], dtype=torch.long).")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise EngineError(f"input_ids has dtype {dtype_name(input_ids.dtype)}; token ids are integers.",
                              "pass input_ids as torch.long.")
        if input_ids.dim() != 2:
            raise EngineError(f"input_ids has rank {input_ids.dim()} (shape {tuple(input_ids.shape)}); "
                              "the engine takes (batch, seq).", "add a batch axis: input_ids[None].")
        for axis, dim in enumerate(("batch", "seq")):
            size, r = input_ids.shape[axis], self.plan.serve[dim]
            if size not in r:
                wider = f"{min(r.min, size)}:{max(r.max, size)}"
                raise EngineError(f"input_ids {dim} {size} is outside this engine's {dim} range "
                                  f"{r.min}..{r.max} (it was built with --{dim} {r.text()}).",
                                  f"rebuild with a range that holds {size}: {self.rebuild_hint(**{dim: wider})}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise EngineError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                              f"{tuple(input_ids.shape)}; they share batch and seq.", "pass masks of the same shape.")
        vocab = self.plan.model["vocab_size"]
        lo, hi = torch.stack(torch.aminmax(input_ids)).tolist()  # one host sync per call, not two
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise EngineError(f"token id {bad} is outside the vocabulary 0..{vocab - 1}.",
                              f"pass ids between 0 and {vocab - 1}.")

    def _pad(self, input_ids, attention_mask):
        """Pad batch rows and seq positions the graph cannot take (plan.pad_to)."""
        b, t = input_ids.shape
        gb, gt = self.plan.graph_size("batch", b), self.plan.graph_size("seq", t)
        if gt > t:  # right-pad: causal attention keeps real positions blind to the padding
            input_ids = torch.nn.functional.pad(input_ids, (0, gt - t), value=PAD_ID)
            attention_mask = torch.nn.functional.pad(attention_mask, (0, gt - t), value=0)
        if gb > b:  # dummy rows: rows never mix in a transformer
            input_ids = torch.cat([input_ids, input_ids[:1].expand(gb - b, -1)], 0)
            attention_mask = torch.cat([attention_mask, attention_mask[:1].expand(gb - b, -1)], 0)
        return input_ids, attention_mask

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for input_ids (B, T); raises EngineError outside the plan."""
        self.check_inputs(input_ids, attention_mask)
        b, t = input_ids.shape
        input_ids = input_ids.to(self.device, torch.long)
        mask = (torch.ones_like(input_ids) if attention_mask is None
                else attention_mask.to(self.device, torch.long))
        ids, mask = self._pad(input_ids, mask)
        feeds = {"input_ids": ids, "attention_mask": mask}
        names = [s.name for s in self.plan.inputs]
        if "position_ids" in names:
            feeds["position_ids"] = torch.arange(ids.shape[1], device=self.device).expand_as(ids).contiguous()
        with torch.no_grad():
            logits = self.runner(**{k: feeds[k] for k in names})
        return logits[:b, :t]

    # ---- the eager reference ----------------------------------------------------------------
    def reference_model(self, dtype: torch.dtype = torch.float32):
        """The Hugging Face eager model holding this engine's weights (CPU), for verify."""
        from transformers import GPT2Config

        state = {k[2:] if k.startswith("m.") else k: v.detach().to("cpu", dtype)
                 for k, v in self.program.state_dict.items()}
        config = GPT2Config.from_dict(self.hf_config)
        return model_from_config(config, self.plan.attn_implementation, state_dict=state, dtype=dtype)

    # ---- save / load ------------------------------------------------------------------------
    def save(self, directory: str | Path, force: bool = False) -> Path:
        directory = Path(directory)
        check_target(directory, force)
        tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            torch.export.save(self.program, str(tmp / "program.pt2"))
            files = {"program": "program.pt2"}
            files.update(get_backend(self.backend).save(self.runner, tmp))
            (tmp / "plan.json").write_text(self.plan.dumps())
            (tmp / "hf_config.json").write_text(json.dumps(self.hf_config, indent=2))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            meta = dict(self.meta, format=ENGINE_FORMAT, dynashape=__version__, backend=self.backend,
                        device=self.settings.device, dtype=self.settings.dtype,
                        artifacts={k: {"file": f, "sha256": sha256_file(tmp / f)} for k, f in files.items()})
            (tmp / "engine.json").write_text(json.dumps(meta, indent=2))
            _swap_into_place(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.meta = meta
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Engine":
        directory = Path(directory)
        meta = read_engine_meta(directory)
        settings = CompileSettings(backend=meta["backend"], device=device or meta.get("device", "cpu"),
                                   dtype=meta.get("dtype", "float32"))
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            why = f"--device {device} was asked for" if device else f"engine {directory} was built for {settings.device}"
            raise EngineError(f"{why}, and this machine has no GPU.",
                              "use --device cpu, or load it on a GPU machine." if device else
                              "load it on a GPU machine, or rebuild with --device cpu.")
        try:
            plan = ShapePlan.from_json(json.loads((directory / "plan.json").read_text()))
            hf_config = json.loads((directory / "hf_config.json").read_text())
            with _quiet_logger("torch.export"):  # torch logs a traceback before raising on a bad archive
                program = torch.export.load(str(directory / "program.pt2"))
        except DynashapeError:
            raise
        except Exception as e:
            raise EngineError(f"engine {directory} is corrupt ({type(e).__name__}: {str(e).splitlines()[0][:100]}).",
                              "rebuild it: " + rebuild_command(meta.get("compile_args") or {})) from None
        t0 = time.perf_counter()
        runner = get_backend(settings.backend).load(directory, program, plan, settings)
        meta["load_s"] = time.perf_counter() - t0
        return cls(plan, settings.backend, runner, program, settings, hf_config, meta, _load_tokenizer(directory))


@contextlib.contextmanager
def _quiet_logger(name: str):
    log = logging.getLogger(name)
    old, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = old


def _load_tokenizer(directory: Path):
    if not (directory / "tokenizer").is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory / "tokenizer"), local_files_only=True)
    except Exception as e:  # an unreadable tokenizer is a damaged engine
        raise EngineError(f"{directory}/tokenizer cannot be read ({type(e).__name__}).",
                          "rebuild the engine with --force.") from None


def rebuild_command(args: dict) -> str:
    """``dynashape compile`` command line from compile_args (model, seq, batch, backend, device, dtype, out)."""
    parts = ["dynashape compile", str(args.get("model", "MODEL"))]
    for key in ("seq", "batch", "backend", "device", "dtype"):
        if args.get(key):
            parts.append(f"--{key} {args[key]}")
    parts.append(f"-o {args.get('out', 'DIR')} --force")
    return " ".join(parts)


def check_target(directory: Path, force: bool) -> None:
    if not directory.exists():
        return
    if not force:
        raise EngineError(f"{directory} already exists.", "pass --force to replace it, or choose another -o.")
    if not directory.is_dir() or (any(directory.iterdir()) and not (directory / "engine.json").exists()):
        raise EngineError(f"{directory} exists and is not a dynashape engine; --force only replaces engines.",
                          "choose another -o, or remove it yourself.")


def _swap_into_place(tmp: Path, directory: Path) -> None:
    """Rename tmp to directory; an old engine is moved aside first and removed only after."""
    old = None
    if directory.exists():
        old = directory.parent / f".{directory.name}.old-{os.getpid()}"
        os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except BaseException:
        if old is not None:
            os.replace(old, directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_engine_meta(directory: Path) -> dict:
    """engine.json, checked: format, version, backend, and every artifact's presence and sha256."""
    rebuild = "rebuild it with dynashape compile ... -o DIR --force"
    if not directory.is_dir():
        raise EngineError(f"engine directory {directory} does not exist.",
                          "build one: dynashape compile random:gpt2 --seq 1:1024 -o " + str(directory))
    try:
        meta = json.loads((directory / "engine.json").read_text())
    except FileNotFoundError:
        raise EngineError(f"{directory} has no engine.json: it is not a dynashape engine (or a build was cut off).",
                          rebuild) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EngineError(f"{directory}/engine.json is corrupt.", rebuild) from None
    if isinstance(meta, dict) and isinstance(meta.get("compile_args"), dict):
        meta["compile_args"]["out"] = str(directory)  # the rebuild hint names where it is now
    rebuild = "rebuild it: " + (rebuild_command(meta["compile_args"]) if isinstance(meta, dict)
                                and isinstance(meta.get("compile_args"), dict) else "dynashape compile ... --force")
    if not isinstance(meta, dict) or meta.get("format") != ENGINE_FORMAT:
        raise EngineError(f"{directory} has engine format {meta.get('format') if isinstance(meta, dict) else '?'}, "
                          f"this dynashape reads format {ENGINE_FORMAT}.", rebuild)
    if str(meta.get("dynashape", "")).split(".")[:2] != __version__.split(".")[:2]:
        raise EngineError(f"{directory} was built by dynashape {meta.get('dynashape')}, this is {__version__}.", rebuild)
    try:
        get_backend(meta.get("backend", "?"))
    except BackendError as e:  # an unknown name means a corrupt engine.json; a missing dependency keeps its fix
        raise EngineError(f"engine {directory} needs backend {meta.get('backend')!r}: {e.message}",
                          e.fix if meta.get("backend") in BACKENDS else rebuild) from None
    for name, art in meta.get("artifacts", {}).items():
        path = directory / art["file"]
        if not path.is_file():
            raise EngineError(f"{directory} is missing its {name} artifact {art['file']}.", rebuild)
        if sha256_file(path) != art["sha256"]:
            raise EngineError(f"{directory}/{art['file']} does not match its checksum (truncated or edited).", rebuild)
    for need in ("plan.json", "hf_config.json"):
        if not (directory / need).is_file():
            raise EngineError(f"{directory} is missing {need}.", rebuild)
    return meta


def build_engine(loaded, plan: ShapePlan, settings: CompileSettings, out: str | Path | None = None) -> Engine:
    """Export ``loaded.model`` per ``plan`` and compile it with the chosen backend."""
    from ..graphs import check_program, export_plan

    backend = get_backend(settings.backend)
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("--device cuda was asked for, and this machine has no GPU.", "use --device cpu.")
    model = loaded.model.to(settings.device, parse_dtype(settings.dtype))
    exported = export_plan(model, plan, settings.device)
    problems = [f for f in check_program(exported.program, plan) if f.status == "REFUSED"]
    if problems:
        raise EngineError(problems[0].message, problems[0].fix)
    t0 = time.perf_counter()
    extra = {"model": model} if getattr(backend, "NEEDS_MODEL", False) else {}  # onnx: the decode graph
    runner = backend.compile(exported.program, plan, settings, **extra)
    compile_args = {"model": loaded.name, "seq": plan.serve["seq"].text(), "batch": plan.serve["batch"].text(),
                    "backend": settings.backend, "device": settings.device, "dtype": settings.dtype,
                    "out": str(out) if out else "DIR"}
    meta = {"compile_args": compile_args, "export_s": round(exported.seconds, 3),
            "compile_s": round(time.perf_counter() - t0, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return Engine(plan, settings.backend, runner, exported.program, settings, loaded.config.to_dict(), meta,
                  loaded.tokenizer)
