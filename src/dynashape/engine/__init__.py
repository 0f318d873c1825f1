"""Engines: input checks, padding and dispatch (``engine``), the directory store (``store``)."""
from .engine import Engine, build_engine, check_target, rebuild_command

__all__ = ["Engine", "build_engine", "check_target", "rebuild_command"]
