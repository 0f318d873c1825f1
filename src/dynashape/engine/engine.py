"""Engine: the compiled graphs of one plan, their weights, and the one way to run them.

A generation engine (backends eager, inductor, aoti) holds a prefill and a decode graph over the
lean model and a static KV cache; ``generate`` runs them through the runtime's generator. A forward
engine (onnx, tensorrt) holds a no-cache forward graph: ``engine(input_ids)`` gives logits at every
position, with every call checked against the plan (dtype, rank, ranges, token ids) and sizes the
graph cannot take padded and sliced back; ``generate`` reruns the growing sequence per token.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends import CompileSettings, get_backend
from ..errors import DynashapeError, EngineError
from ..models import family_for
from ..models.load import dtype_name, model_from_config, parse_dtype
from ..planning.shapes import ShapePlan
from . import store
from .forward import ForwardCalls

WEIGHTS = "weights.safetensors"
MODEL_CONFIG = "model.json"        # the lean model's config (no transformers import at load)


@dataclass
class Engine(ForwardCalls):
    plan: ShapePlan
    backend: str
    runners: dict[str, Any]           # graph name -> callable
    settings: CompileSettings
    hf_config: dict
    model: Any = None                 # the lean model (generation engines)
    program: Any = None               # the exported no-cache program (forward engines)
    meta: dict = field(default_factory=dict)
    tokenizer: Any = None             # the model's tokenizer, when it had one (kept in tokenizer/)
    _generator: Any = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)

    @property
    def generates(self) -> bool:
        """True for a generation engine (KV cache), False for a forward engine."""
        return self.plan.runtime.kind == "generation"

    def rebuild_hint(self, **changes: str) -> str:
        """The compile command that built this engine, with ``changes`` (e.g. seq="1:300") applied."""
        args = dict(self.meta.get("compile_args") or {})
        if not args:
            return "dynashape compile MODEL --seq MIN:MAX --batch MIN:MAX -o DIR --force"
        args.update(changes)
        return store.rebuild_command(args)

    # ---- generation ---------------------------------------------------------------------------
    @property
    def generator(self):
        """The runtime over this engine (created on first use: allocates the cache, captures graphs)."""
        if self._generator is None:
            from ..runtime.generator import Generator

            if not self.generates:
                raise EngineError(f"a {self.backend} engine has no KV-cache graphs.",
                                  "use engine.generate (no-cache loop), or rebuild with --backend eager.")
            self._generator = Generator(self)
        return self._generator

    def generate(self, prompts, max_new_tokens: int = 20, sampling=None, eos_token_id=None,
                 ignore_eos: bool = False, on_token=None) -> list[list[int]]:
        """New tokens per prompt (lists of ids). ``on_token(row, token)`` streams them as they come."""
        if self.generates:
            return self.generator.generate(prompts, max_new_tokens, sampling, eos_token_id, ignore_eos, on_token)
        from ..runtime.nocache import generate_nocache

        return generate_nocache(self, prompts, max_new_tokens, sampling, eos_token_id, ignore_eos, on_token)

    # ---- the eager reference ------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under Hugging Face's names (from the lean model or the exported program)."""
        if self.model is not None:
            fam = family_for(self.hf_config.get("model_type", "gpt2"))
            return fam.state_to_hf(self.model.config, self.model.state_dict())
        return {k[2:] if k.startswith("m.") else k: v for k, v in self.program.state_dict.items()}

    def reference_model(self, dtype: torch.dtype = torch.float32):
        """The Hugging Face eager model holding this engine's weights (CPU), for verify."""
        from transformers import AutoConfig

        state = {k: v.detach().to("cpu", dtype) for k, v in self.state_dict().items()}
        config = AutoConfig.for_model(**self.hf_config)
        return model_from_config(config, self.plan.attn_implementation, state_dict=state, dtype=dtype)

    # ---- save / load --------------------------------------------------------------------------
    def save(self, directory: str | Path, force: bool = False) -> Path:
        directory = Path(directory)
        store.check_target(directory, force)
        tmp = store.new_tmp(directory)
        try:
            files = {}
            if self.model is not None:
                from safetensors.torch import save_file

                (tmp / MODEL_CONFIG).write_text(json.dumps(self.model.config.to_json(), indent=2))
                files["model_config"] = MODEL_CONFIG
                state = {k: v.contiguous() for k, v in self.model.state_dict().items()
                         if not (k == "lm_head.weight" and self.model.config.tie_word_embeddings)}
                save_file(state, str(tmp / WEIGHTS))
                files["weights"] = WEIGHTS
            if self.program is not None:
                torch.export.save(self.program, str(tmp / "program.pt2"))
                files["program"] = "program.pt2"
            files.update(get_backend(self.backend).save(self.runners, tmp))
            (tmp / "plan.json").write_text(self.plan.dumps())
            (tmp / "hf_config.json").write_text(json.dumps(self.hf_config, indent=2))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            meta = store.write_meta(tmp, dict(self.meta, backend=self.backend, device=self.settings.device,
                                              dtype=self.settings.dtype), files)
            store.swap_into_place(tmp, directory, force)
        finally:
            if tmp.exists():                        # a failed save leaves nothing behind
                shutil.rmtree(tmp, ignore_errors=True)
        self.meta = meta
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Engine":
        t0 = time.perf_counter()
        directory = Path(directory)
        meta = store.read_meta(directory)
        built = meta.get("device", "cpu")
        settings = CompileSettings(backend=meta["backend"], device=device or built, dtype=meta.get("dtype", "float32"))
        _check_device(directory, device, built, settings.device)
        try:
            plan = ShapePlan.from_json(json.loads((directory / "plan.json").read_text()))
            hf_config = json.loads((directory / "hf_config.json").read_text())
            if plan.runtime.kind == "generation" and torch.device(settings.device).type != torch.device(built).type:
                raise EngineError(f"{directory} is a generation engine built for {built}, and it was asked to run on "
                                  f"{settings.device}.", meta["rebuild"].replace(f"--device {built}",
                                                                                 f"--device {settings.device}"))
            model, program = _load_graph_inputs(directory, plan, hf_config, settings)
        except DynashapeError:
            raise
        except Exception as e:
            raise EngineError(f"engine {directory} is corrupt ({type(e).__name__}: {str(e).splitlines()[0][:100]}).",
                              meta["rebuild"]) from None
        t1 = time.perf_counter()
        runners = get_backend(settings.backend).load(directory, plan, settings, model=model, program=program)
        meta["load_s"] = {"weights": round(t1 - t0, 3), "graphs": round(time.perf_counter() - t1, 3)}
        return cls(plan, settings.backend, runners, settings, hf_config, model, program, meta,
                   _load_tokenizer(directory))


def _check_device(directory: Path, asked: str | None, built: str, device: str) -> None:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        why = f"--device {asked} was asked for" if asked else f"engine {directory} was built for {built}"
        raise EngineError(f"{why}, and this machine has no GPU.",
                          "use --device cpu, or load it on a GPU machine." if asked else
                          "load it on a GPU machine, or rebuild with --device cpu.")


def _load_graph_inputs(directory: Path, plan: ShapePlan, hf_config: dict, settings: CompileSettings):
    """(lean model, exported program): the weights a generation engine runs, or a forward engine's program."""
    if plan.runtime.kind != "generation":
        with _quiet_logger("torch.export"):  # torch logs a traceback before raising on a bad archive
            return None, torch.export.load(str(directory / "program.pt2"))
    from safetensors.torch import load_file

    fam = family_for(hf_config.get("model_type", "gpt2"))
    cfg = fam.config_from_json(json.loads((directory / MODEL_CONFIG).read_text()))
    state = load_file(str(directory / WEIGHTS), device=str(settings.device))
    model = fam.Model.from_state(cfg, {k: aligned(t) for k, t in state.items()}, dtype=parse_dtype(settings.dtype))
    return configure(model, plan), None


def aligned(t: torch.Tensor, to: int = 16) -> torch.Tensor:
    """``t``, or a copy of it where its data does not start on a ``to``-byte boundary. safetensors packs
    tensors back to back, so a loaded weight can start at any multiple of its element size, while the
    build's weights were allocations of their own; Triton specializes its kernels on 16-byte aligned
    pointers (and loads 16 bytes at a time only from them), so a loaded engine must see the build's
    alignment to run the kernels the build compiled and shipped."""
    return t if t.data_ptr() % to == 0 else t.clone()


def configure(model, plan: ShapePlan):
    r = plan.runtime
    return model.configure(attention=r.attention, kernels=r.kernels, vocab_pad=r.vocab_pad, pdl=r.pdl,
                           prefill=r.prefill)


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


def build_engine(loaded, plan: ShapePlan, settings: CompileSettings, out: str | Path | None = None,
                 progress=None) -> Engine:
    """Build ``plan``'s graphs from ``loaded`` (a LoadedModel) with the chosen backend."""
    from ..backends.sidecar import kept_env
    from .build import build_runners, warm_up

    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("--device cuda was asked for, and this machine has no GPU.", "use --device cpu.")
    t0 = time.perf_counter()
    compile_args = {"model": loaded.name, "seq": plan.serve["seq"].text(), "batch": plan.serve["batch"].text(),
                    "backend": settings.backend, "device": settings.device, "dtype": settings.dtype,
                    "out": str(out) if out else "DIR"}
    with kept_env("TRITON_CACHE_DIR"):
        model, program, runners, timings = build_runners(loaded, plan, settings, progress)
        meta = dict(timings, compile_args=compile_args, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    torch=torch.__version__.split("+")[0])
        engine = Engine(plan, settings.backend, runners, settings, loaded.config.to_dict(), model, program, meta,
                        loaded.tokenizer)
        if engine.generates:
            meta["warmup_s"] = warm_up(engine, progress)
    meta["build_s"] = round(time.perf_counter() - t0, 3)
    return engine


__all__ = ["Engine", "build_engine", "configure", "dtype_name"]
