"""Run the app under uvicorn: the "listening on" line, SIGTERM, and the exit status.

With ``--port 0`` the kernel picks a free port; it is known only once the socket is bound, so the
line ``listening on http://HOST:PORT`` is printed from uvicorn's startup, after the bind (a parent
process reads it instead of guessing a port, which would race).

SIGTERM / SIGINT: uvicorn closes the listening socket at once (new connections are refused), lets
in-flight requests finish for at most ``shutdown_timeout`` seconds (then cancels them), runs the
lifespan shutdown (the scheduler thread stops), and returns. uvicorn re-raises the signal after its
shutdown with the handler that was installed before it started; with Python's default handler
that kills the process with status 143, so a no-op handler is installed first and we exit 0.
"""
from __future__ import annotations

import signal
import sys
import time
import urllib.request
from typing import Callable

EXIT_LOAD_FAILED = 2


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    """Poll ``url``/health until it answers 200 (the engine is loaded and its graphs captured)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/health did not become 200 in {timeout} s")
        time.sleep(0.05)


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_server(source: Callable, settings, host: str = "127.0.0.1", port: int = 8000,
               shutdown_timeout: float = 30.0, log_level: str = "warning") -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean shutdown, 2 when the engine failed to load."""
    import uvicorn

    from .app import build_app

    failed: list[str] = []

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and self.servers:
                bound = self.servers[0].sockets[0].getsockname()
                print(f"listening on {url_of(host, bound[1])}", flush=True)

    def on_fatal(error: str) -> None:       # the engine failed in the background: stop serving
        failed.append(error)
        server.should_exit = True

    app = build_app(source, settings, background=True, on_fatal=on_fatal)
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=False, log_level=log_level,
                            timeout_graceful_shutdown=shutdown_timeout)
    server = Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    try:
        server.run()
    except SystemExit:                      # uvicorn exits 1 when it cannot bind
        pass
    if failed:
        print(f"error: {failed[0]}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    if not server.started:
        print(f"error: could not listen on {url_of(host, port)} (in use, or not an address of this machine). "
              "Fix: choose another --port (0 picks a free one) or --host.", file=sys.stderr)
        return EXIT_LOAD_FAILED
    return 0


def _ignore(signum, frame) -> None:
    """Stands in for the default handler that uvicorn re-raises into after its graceful shutdown."""
