"""Errors of our own: each carries a one-line message (what is wrong) and a fix (what to do).

The CLI prints ``error: <message> Fix: <fix>`` on one line and exits non-zero; it never shows a
traceback for these.
"""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


class UsageParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump) and exit code 2 (every front end)."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        print(f"error: {message}. Fix: see `{self.prog} --help`.", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class DynashapeError(Exception):
    """Base class: ``message`` says what is wrong, ``fix`` the exact flag or value that works."""

    exit_code = 2

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message.strip()
        self.fix = fix.strip()

    def one_line(self) -> str:
        text = self.message if not self.fix else f"{self.message} Fix: {self.fix}"
        return " ".join(text.split())  # one line, whatever the parts held

    def __str__(self) -> str:
        return self.one_line()


class ShapeError(DynashapeError):
    """A range or size that cannot be parsed or served."""


class PlanError(DynashapeError):
    """The requested ranges cannot be served by the model or the installed torch."""


class ModelError(DynashapeError):
    """The model cannot be found or loaded."""


class ExportError(DynashapeError):
    """torch.export failed; ``diagnosis`` holds the translated cause when we know it."""

    def __init__(self, message: str, fix: str = "", diagnosis=None):
        super().__init__(message, fix)
        self.diagnosis = diagnosis


class EngineError(DynashapeError):
    """An engine directory is missing, corrupt, mismatched, or a call is outside its plan."""


class BackendError(DynashapeError):
    """A backend is unknown or its optional dependency is missing."""


class GenerateError(DynashapeError):
    """A generation request that cannot be served (prompt, budget, ids, device)."""


class VerifyError(DynashapeError):
    """verify found sizes whose outputs disagree with the eager reference."""

    exit_code = 1
