"""``serve --ray --replicas N``: N copies of the same server as a Ray Serve deployment behind Ray's
HTTP proxy, one engine per replica (one GPU each on a GPU machine), the same API.

https://docs.ray.io/en/latest/serve/http-guide.html (FastAPI ingress)

The FastAPI app is the one ``app.build_app`` makes; Ray pickles it into every replica and runs its
lifespan there, so each replica loads its own engine and owns its own scheduler thread. The
replica loads in the foreground (``background=False``): Ray counts it as started only when it can
serve. ``max_ongoing_requests`` is set to what one engine holds (its batch plus --max-queue, plus
one), so a full replica answers 429 itself instead of Ray queueing without bound. Metrics are per
replica: each /metrics request reaches one of them.

On a machine with a loopback host, Ray is kept on 127.0.0.1 too (its own ports default to the
machine's outward address) and its usage reporting is off.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
from pathlib import Path

from ..errors import DynashapeError
from .server import url_of

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port(host: str) -> int:
    """Ray's proxy needs a concrete port: ask the kernel for one (released just before Ray binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def replica_resources(device: str, replicas: int) -> dict:
    """One GPU per replica on a GPU engine; CPUs shared so that N replicas fit on any machine."""
    cpus = min(1.0, (os.cpu_count() or 1) / replicas)
    return {"num_cpus": cpus, "num_gpus": 1} if str(device).startswith("cuda") else {"num_cpus": cpus}


def make_deployment(source, settings, replicas: int, actor_options: dict, max_ongoing: int,
                    shutdown_timeout: float):
    from ray import serve

    from .app import build_app

    @serve.deployment(num_replicas=replicas, ray_actor_options=actor_options, max_ongoing_requests=max_ongoing,
                      graceful_shutdown_timeout_s=shutdown_timeout)
    @serve.ingress(build_app(source.load, settings, background=False))
    class DynashapeReplica:
        """Every route comes from the FastAPI app; per-replica state lives in its lifespan."""

    return DynashapeReplica.bind()


def run_ray(source, settings, facts, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
            shutdown_timeout: float = 30.0) -> int:
    """Start Ray and the deployment, print the URL, serve until SIGTERM/SIGINT, then shut Ray down."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if host in LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # node address 127.0.0.1
    if source.is_engine:         # replicas do not share the driver's working directory
        source = dataclasses.replace(source, target=str(Path(source.target).resolve()))
    port = port or free_port(host)
    import ray
    from ray import serve

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):     # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        app = make_deployment(source, settings, replicas, replica_resources(facts.device, replicas),
                              facts.max_batch + settings.max_queue + 1, shutdown_timeout)
        try:
            serve.run(app, name="dynashape", route_prefix="/")
        except Exception as e:  # noqa: BLE001 - a replica that failed to start: one line, then shut down
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise DynashapeError(f"the Ray Serve deployment did not start ({type(e).__name__}: {first}).",
                                 "read the replica logs under /tmp/ray/session_latest/logs/serve/.") from None
        print(f"listening on {url_of(host, port)} ({replicas} replicas on Ray Serve)", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
