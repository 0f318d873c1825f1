"""The command line: parse -> settings -> library call -> print. Nothing outside ``cli`` imports it."""
from .main import main

__all__ = ["main"]
