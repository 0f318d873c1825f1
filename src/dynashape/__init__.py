"""dynashape: compile GPT-2-family models with dynamic shapes that just work."""
__version__ = "0.1.0"
