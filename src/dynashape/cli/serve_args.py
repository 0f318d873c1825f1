"""``dynashape serve``'s flags (kept apart so the parser file stays short)."""
from __future__ import annotations


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server over an engine (continuous batching)")
    p.add_argument("target", help="engine directory, or a model (compiled in memory with --seq/--batch)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed when listening)")
    p.add_argument("--model-name", default=None, help="the name clients use (default: the engine's model)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond this get 429")
    p.add_argument("--log-requests", default=None, metavar="FILE", help="append each request's shape to a JSONL file")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    p.add_argument("--replicas", type=int, default=1, help="with --ray: replicas of the server")
    p.add_argument("--ray", action="store_true", help="run the replicas as a Ray Serve deployment")
    p.add_argument("--seq", default=None, help="for a model: positions per sequence (default 1:n_positions)")
    p.add_argument("--batch", default=None, help="for a model: rows decoded at once (default 1:8)")
    p.add_argument("--backend", default=None, help="for a model: the backend to compile in memory with (default eager)")
    p.add_argument("--device", default=None, help="for a model: cuda when there is a GPU, else cpu")
    p.add_argument("--dtype", default=None, help="for a model: float32 on cpu, float16 on cuda by default")
