"""``eager``: the exported program's own module, run by PyTorch without compilation."""
from __future__ import annotations

NAME = "eager"


def compile(program, plan, settings):
    return program.module()


def save(runner, directory) -> dict[str, str]:
    return {}  # the engine's program.pt2 is all this backend needs


def load(directory, program, plan, settings):
    return program.module()
