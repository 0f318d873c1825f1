"""Model loading (hub id, local directory, ``random:<preset>``) and the lean GPT-2 runtime."""
from .load import PRESETS, LoadedModel, load_info, load_model, model_from_config, parse_dtype, preset_config

__all__ = ["PRESETS", "LoadedModel", "load_info", "load_model", "model_from_config", "parse_dtype", "preset_config"]
