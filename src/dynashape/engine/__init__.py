"""Engines: the compiled graphs of one plan (``engine``), how they are built (``build``), called as a
forward graph (``forward``), and stored (``store``)."""
from .engine import Engine, build_engine
from .store import check_target, rebuild_command

__all__ = ["Engine", "build_engine", "check_target", "rebuild_command"]
