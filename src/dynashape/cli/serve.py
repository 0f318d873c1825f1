"""``dynashape serve``: filled in by the serving work."""
from __future__ import annotations

from ..errors import DynashapeError


def run_serve(args) -> int:
    raise DynashapeError("serve is not built yet.", "use dynashape generate.")
