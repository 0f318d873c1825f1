"""Writing measured results: JSON (and a PNG) through a temporary file renamed into place, so a run
stopped half-way never leaves a truncated result behind."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (same folder, so the rename is atomic)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_results(result: dict, json_path: str, png_path: str | None = None,
                  plot: Callable[[dict, str], None] | None = None) -> None:
    """The result as JSON, and ``plot(result, path)`` as a PNG when both a path and a plot are given."""
    def write_json(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")

    atomic_write(json_path, write_json)
    if png_path and plot is not None:
        atomic_write(png_path, lambda tmp: plot(result, tmp))
