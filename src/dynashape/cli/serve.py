"""``dynashape serve``: flags -> an engine source and server settings -> the server (or Ray Serve).

The engine is loaded (or compiled in memory) before the server starts, so every mistake is one
line and a non-zero exit before anything listens; the graphs are captured once the socket is up
(/health answers 503 until then).
"""
from __future__ import annotations

import importlib.util

from ..errors import DynashapeError


def _check_flags(args) -> None:
    if not 0 <= args.port <= 65535:
        raise DynashapeError(f"--port {args.port} is not a port.", "use 1..65535, or 0 to pick a free one.")
    if args.max_queue < 0:
        raise DynashapeError(f"--max-queue {args.max_queue} is negative.", "use 0 (no waiting) or more, e.g. 256.")
    if args.shutdown_timeout < 0:
        raise DynashapeError(f"--shutdown-timeout {args.shutdown_timeout} is negative.", "use seconds >= 0, e.g. 30.")
    if args.replicas < 1:
        raise DynashapeError(f"--replicas {args.replicas} is below 1.", "use --replicas 1 or more.")
    if args.replicas > 1 and not args.ray:
        raise DynashapeError(f"--replicas {args.replicas} needs --ray (one process serves one engine).",
                             f"add --ray: dynashape serve {args.target} --ray --replicas {args.replicas}.")
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise DynashapeError(f"serve needs {', '.join(missing)}, which is not installed.",
                             'pip install "dynashape[serve]".')
    if args.ray and importlib.util.find_spec("ray") is None:
        raise DynashapeError("--ray needs Ray Serve, which is not installed.", 'pip install "dynashape[ray]".')
    if args.log_requests:
        try:
            open(args.log_requests, "a").close()
        except OSError as e:
            raise DynashapeError(f"--log-requests {args.log_requests} cannot be written ({e.strerror}).",
                                 "name a file in a directory that exists and is writable.") from None


def run_serve(args) -> int:
    from ..serve.app import ServeSettings
    from ..serve.source import EngineSource

    _check_flags(args)
    source = EngineSource(args.target, args.seq, args.batch or "1:8", args.backend or "eager", args.device, args.dtype)
    given = [flag for flag, value in (("--seq", args.seq), ("--batch", args.batch), ("--backend", args.backend))
             if value is not None]
    if source.is_engine and given:
        raise DynashapeError(f"{given[0]} is for a model; {args.target} is an engine with its own plan.",
                             f"drop {given[0]}, or rebuild the engine with the {given[0][2:]} you need.")
    facts = source.check()
    settings = ServeSettings(model_name=args.model_name, aliases=facts.aliases, max_queue=args.max_queue,
                             log_requests=args.log_requests)
    if args.ray:
        from ..serve.ray import run_ray

        return run_ray(source, settings, facts, host=args.host, port=args.port, replicas=args.replicas,
                       shutdown_timeout=args.shutdown_timeout)
    from ..serve.server import run_server

    engine = source.load()
    return run_server(lambda: engine, settings, host=args.host, port=args.port,
                      shutdown_timeout=args.shutdown_timeout)
