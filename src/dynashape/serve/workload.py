"""Traffic-driven planning: the request log a server writes, and the plan it suggests.

``serve --log-requests FILE`` appends one JSON line per prompt::

    {"t": 1767225600.123, "prompt_len": 37, "max_tokens": 128, "inflight": 12, "ok": true}

``t`` is the arrival (Unix seconds), ``inflight`` the sequences running or waiting when it arrived
(itself included), ``ok`` false when the engine refused it (a prompt or budget beyond the plan:
traffic the plan should grow to cover). ``doctor --workload FILE`` reads it back (``plan.py``).
"""
from __future__ import annotations

import json
import threading
import time


class RequestLog:
    """Append-only JSONL, one line per prompt, flushed per request (a crash loses at most one)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def log(self, shapes: list[tuple[int, int]], inflight: int, ok: bool) -> None:
        now = round(time.time(), 4)
        lines = "".join(json.dumps({"t": now, "prompt_len": n, "max_tokens": m, "inflight": inflight, "ok": ok}) + "\n"
                        for n, m in shapes)
        with self._lock:
            if not self._file.closed:
                self._file.write(lines)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
