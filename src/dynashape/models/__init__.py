"""Models: loading (hub id, local directory, ``random:<preset>``), the family protocol, and the lean
GPT-2 the generation engines run."""
from .family import Family, family_for
from .load import PRESETS, LoadedModel, load_info, load_model, model_from_config, parse_dtype, preset_config

__all__ = ["PRESETS", "Family", "LoadedModel", "family_for", "load_info", "load_model", "model_from_config",
           "parse_dtype", "preset_config"]
