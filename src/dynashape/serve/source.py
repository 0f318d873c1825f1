"""Where a server's engine comes from: an engine directory, or a model compiled in memory.

An ``EngineSource`` is plain, picklable data, so the same description travels to every Ray Serve
replica and each builds its own engine there. ``check`` is the cheap part (metadata and plan only)
that the CLI runs in the foreground, so a mistake is one line before any server starts; ``load``
is the expensive part (weights, compilation) that runs wherever the engine will live.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError, GenerateError

SERVE_BACKENDS = "--backend eager, inductor or aoti"


@dataclass(frozen=True)
class EngineFacts:
    """What the server needs to know about an engine before it is loaded."""

    name: str               # the model name clients send by default
    aliases: tuple          # other names accepted in "model" (e.g. the engine directory's name)
    max_batch: int          # rows decoded at once (the plan's --batch max)
    max_len: int            # positions per sequence (the plan's --seq max)
    device: str


@dataclass(frozen=True)
class EngineSource:
    target: str
    seq: str | None = None           # for a model: default 1:n_positions
    batch: str = "1:8"
    backend: str = "eager"
    device: str | None = None
    dtype: str | None = None

    @property
    def is_engine(self) -> bool:
        from ..engine.store import is_engine_dir

        return is_engine_dir(self.target)

    # ---- cheap checks ---------------------------------------------------------------------------
    def check(self) -> EngineFacts:
        """Everything that can be checked without weights; raises a DynashapeError with the fix."""
        return self._check_engine() if self.is_engine else self._check_model()

    def _check_engine(self) -> EngineFacts:
        import json

        import torch

        from ..engine import store
        from ..planning.shapes import ShapePlan

        path = Path(self.target)
        meta = store.read_meta(path)
        plan = ShapePlan.from_json(json.loads((path / "plan.json").read_text()))
        _require_generation(plan.runtime.kind, meta.get("backend"), str(path))
        device = self.device if self.device not in (None, "auto") else meta.get("device", "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"engine {path} runs on {device}, and this machine has no GPU.",
                              "serve it on a GPU machine, or rebuild with --device cpu.")
        if self.dtype is not None and self.dtype != meta.get("dtype"):
            raise GenerateError(f"--dtype {self.dtype} was asked for; engine {path} is built for {meta.get('dtype')}.",
                                "drop --dtype, or rebuild the engine with that --dtype.")
        name = plan.model.get("name") or path.name
        return EngineFacts(name, (path.resolve().name,), plan.serve["batch"].max, plan.serve["seq"].max, str(device))

    def _check_model(self) -> EngineFacts:
        from .. import api

        plan = api.plan(**self.plan_args())
        api.require_ok(plan)
        _require_generation(plan.runtime.kind, plan.runtime.backend, self.target)
        return EngineFacts(self.target, (), plan.serve["batch"].max, plan.serve["seq"].max, plan.runtime.device)

    def plan_args(self) -> dict:
        """dynashape.plan's arguments for a model target, with serve's defaults filled in."""
        from ..backends import default_dtype, resolve_device
        from ..models import load_info

        device = resolve_device(self.device)
        seq = self.seq or f"1:{load_info(self.target)['n_positions']}"
        return dict(model=self.target, seq=seq, batch=self.batch, device=device,
                    dtype=self.dtype or default_dtype(device), backend=self.backend)

    # ---- the expensive part ---------------------------------------------------------------------
    def load(self):
        """The engine itself (loaded, or compiled in memory); its generator is not created yet."""
        from .. import api

        if self.is_engine:
            engine = api.load(self.target, device=None if self.device in (None, "auto") else self.device)
            _require_generation(engine.plan.runtime.kind, engine.backend, self.target)
            return engine
        return api.compile(**self.plan_args())


def _require_generation(kind: str, backend, where: str) -> None:
    if kind != "generation":
        raise EngineError(f"{where} is a {backend} engine (a no-cache forward graph), and serve needs a generation "
                          "engine with a KV cache.", f"compile it with {SERVE_BACKENDS}.")
