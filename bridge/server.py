"""Build and run the ASGI server: uvicorn with graceful draining, on a given socket.

``serve_forever`` is what ``bridge serve`` runs; ``make_server`` and ``free_socket`` let the
demo, the tests and the benchmark run the very same stack in-process on a free port.
Nothing here parses arguments (``bridge.cli`` does) and nothing imports the CLI.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import time
from collections.abc import Generator
from typing import Any

import threadpoolctl
import uvicorn

from bridge.app import create_app
from bridge.config import Settings
from bridge.services import Services

logger = logging.getLogger("bridge")


class DrainingServer(uvicorn.Server):
    """uvicorn that, on the first SIGTERM/SIGINT, stops taking calls and lets live ones end.

    New calls are refused (503, so Twilio's fallback URL can take them) while live calls
    carry on for up to ``SHUTDOWN_DRAIN_S``; a second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, services: Services, drain_s: float) -> None:
        super().__init__(config)
        self.services = services
        self.drain_s = drain_s
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.drain_deadline is not None or not (self.services.calls or self.services.proxied):
            super().handle_exit(sig, frame)
            return
        self.services.draining = True
        self.drain_deadline = time.monotonic() + self.drain_s
        logger.info(
            "draining: %d live calls, new calls refused (up to %.0f s; signal again to stop now)",
            len(self.services.calls),
            self.drain_s,
        )

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        with super().capture_signals():
            yield
            # uvicorn would now raise the signal it stopped on again, so the process dies
            # by it (exit 143). Stopping on SIGTERM is how we are meant to stop: exit 0.
            self._captured_signals.clear()

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and (
            not (self.services.calls or self.services.proxied)
            or time.monotonic() >= self.drain_deadline
        ):
            logger.info("drained: %d calls still live", len(self.services.calls))
            return True
        return await super().on_tick(counter)


def make_server(settings: Settings, app: Any, services: Any, **overrides: Any) -> DrainingServer:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # Webhooks and stream handshakes: httptools' C parser takes about a third less of
        # the server's CPU per Twilio webhook than h11 (signed POST, TwiML answered).
        http="httptools",
        # Media frames are small; a peer sending huge frames is cut off, not buffered.
        ws_max_size=max(settings.max_message_bytes * 4, 1 << 20),
        ws="websockets-sansio",
        # A media socket whose peer stops answering pings is closed (telephony timings).
        ws_ping_interval=settings.media_ping_interval_s or None,
        ws_ping_timeout=settings.media_ping_timeout_s,
        proxy_headers=True,
        # X-Forwarded-For / -Proto are believed only from these (the per-address limits).
        forwarded_allow_ips=list(settings.trusted_proxies),
        lifespan="on",
        **overrides,
    )
    return DrainingServer(config, services, settings.shutdown_drain_s)


def serve_forever(settings: Settings) -> int:
    app = create_app(settings)
    services = services_of(app)
    server = make_server(settings, app, services)
    logger.info(
        "bridge listening on http://%s:%d (public URL: %s)",
        settings.host,
        settings.port,
        settings.public_url or "not set",
    )
    settle_process()
    server.run()
    return 0


def settle_process() -> None:
    """Ready a serving process for live calls, once its app is built.

    **Math on this thread only.** numpy's BLAS starts a thread per core and splits a
    matrix-vector product across them once it is a few thousand elements: the resampler's
    one product per chunk of the model's voice (800 x 145 for 100 ms) was run on two
    threads, at about twice the CPU, the helper then spinning on another core. A call is one
    asyncio thread; at 10 calls the helper alone was an eighth of the bridge's CPU (``bridge
    bench``, ``/proc/<pid>/task``). ``threadpoolctl`` sets the limit at run time for whichever BLAS
    numpy was built with.

    **The garbage collector's pauses out of live calls' audio.** What start-up allocated
    lives as long as the process: it is kept out of every future collection. Young
    collections run every 10,000 allocations rather than 700: calls make few reference
    cycles, and at 200 calls on one core this halved the caller frames read late
    (``bridge bench``: 110 -> 49 in 20 s)."""
    threadpoolctl.threadpool_limits(1, user_api="blas")
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def services_of(app: Any) -> Services:
    """The Services object behind an app, through any ASGI wrapper (Socket.IO)."""
    while not hasattr(app, "state"):
        app = app.other_asgi_app
    services: Services = app.state.services
    return services


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; otherwise Nagle holds a `clear` back behind the last frame.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock
