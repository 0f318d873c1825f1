"""What the CLI prints: JSON, comma lists, and progress.

Progress: on a terminal each step shows a live spinner with its elapsed time (rich, on stderr); in
text mode every finished step prints one line with what it took (stdout), so logs say where the time
went; with --json nothing but the JSON is printed.
"""
from __future__ import annotations

import json
import sys
import time

from ..errors import DynashapeError


def int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DynashapeError(f"{flag} {text!r} is not a comma-separated list of whole numbers.",
                             f"write e.g. {flag} 1,2,64.") from None
    if not values:
        raise DynashapeError(f"{flag} is empty.", f"write e.g. {flag} 1,2,64.")
    return values


def print_json(data) -> None:
    print(json.dumps(data, indent=2))


class Progress:
    """``with progress("export"):`` -> spinner on a TTY, then ``  export ............ 1.2 s``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.steps: list[tuple[str, float]] = []

    def __call__(self, what: str):
        return _Step(self, what)


class _Step:
    def __init__(self, progress: Progress, what: str):
        self.p, self.what, self.status = progress, what, None

    def __enter__(self):
        self.t0 = time.perf_counter()
        if self.p.live:
            from rich.console import Console

            self.status = Console(stderr=True).status(f"{self.what} ...", spinner="dots")
            self.status.__enter__()
        return self

    def __exit__(self, kind, exc, tb):
        if self.status is not None:
            self.status.__exit__(kind, exc, tb)
        seconds = time.perf_counter() - self.t0
        self.p.steps.append((self.what, seconds))
        if kind is None and not self.p.quiet:
            print(f"  {self.what} {'.' * max(2, 52 - len(self.what))} {seconds:6.1f} s", flush=True)
        return False
