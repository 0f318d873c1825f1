"""The model-family protocol: what the planner, the engine and the runtime need from a family.

A family is one file (``gpt2.py`` now; Llama or Qwen would be one more each) exposing a lean model
with ``prefill``/``decode``/``forward`` over an explicit KV cache, and this record of how to get
there from a Hugging Face checkpoint. Nothing else in dynashape knows a family's internals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ModelError


@dataclass(frozen=True)
class Family:
    name: str                                     # Hugging Face model_type
    Config: Any                                   # dataclass with from_hf(hf_config), to_json(), fields as JSON
    Model: Any                                    # nn.Module class: from_hf(hf_model), from_state(cfg, state, ...)
    state_to_hf: Callable[[Any, dict], dict]      # ours -> HF state dict (for the eager reference)

    def config_from_json(self, data: dict):
        return self.Config(**data)


def _gpt2() -> Family:
    from . import gpt2

    return Family("gpt2", gpt2.GPT2Config, gpt2.GPT2, gpt2.to_hf_state_dict)


FAMILIES: dict[str, Callable[[], Family]] = {"gpt2": _gpt2}


def family_for(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ModelError(f"model type {model_type!r} has no dynashape family.",
                         "use a GPT-2-family model (gpt2, distilgpt2, gpt2-medium/large/xl).")
    return FAMILIES[model_type]()
