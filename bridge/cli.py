"""``bridge``: serve | simulate | local-agent | bench.

    bridge serve                  the bridge for real calls (settings from the environment)
    bridge simulate [caller.wav]  a whole simulated Twilio call on this machine, no keys needed
    bridge local-agent            the built-in Realtime look-alike, on its own
    bridge bench                  load, latency and audio-quality figures (see README)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn

from bridge.config import Settings
from bridge.errors import ConfigError

logger = logging.getLogger("bridge")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")

    sim = sub.add_parser("simulate", help="simulate a Twilio call against a local bridge")
    sim.add_argument("caller_wav", nargs="?", type=Path, default=FIXTURES / "caller-hello.wav")
    sim.add_argument("--out", type=Path, default=Path("out/caller-heard.wav"),
                     help="where to write what the caller heard (default: %(default)s)")
    sim.add_argument("--tail", type=float, default=3.0, help="seconds to listen after speaking")

    agent = sub.add_parser("local-agent", help="run the built-in local Realtime agent")
    agent.add_argument("--host", default="127.0.0.1")
    agent.add_argument("--port", type=int, default=8765)

    bench = sub.add_parser("bench", help="benchmarks: load, latency, audio quality")
    bench.add_argument("rest", nargs=argparse.REMAINDER)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # argparse's REMAINDER drops options that come first (``bench --quick``): the
        # benchmark parses its own.
        from bridge.bench.main import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)

    match args.command:
        case "serve":
            return serve_forever(settings.with_(host=args.host or settings.host,
                                                port=args.port or settings.port))
        case "simulate":
            from bridge.sim.demo import run_demo

            return asyncio.run(run_demo(settings, args.caller_wav, args.out, tail_s=args.tail))
        case "local-agent":
            return asyncio.run(_local_agent(args.host, args.port))
        case "bench":
            from bridge.bench.main import main as bench_main

            return bench_main(args.rest)
    return 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if level != "DEBUG":
        # The library's per-connection lines repeat ours, which name the call.
        logging.getLogger("websockets").setLevel(logging.WARNING)


class DrainingServer(uvicorn.Server):
    """uvicorn that, on the first SIGTERM/SIGINT, stops taking calls and lets live ones end.

    New calls are refused (503, so Twilio's fallback URL can take them) while live calls
    carry on for up to ``SHUTDOWN_DRAIN_S``; a second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, services: Any, drain_s: float) -> None:
        super().__init__(config)
        self.services = services
        self.drain_s = drain_s
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.drain_deadline is not None or not self.services.calls:
            super().handle_exit(sig, frame)
            return
        self.services.draining = True
        self.drain_deadline = time.monotonic() + self.drain_s
        logger.info("draining: %d live calls, new calls refused (up to %.0f s; signal again "
                    "to stop now)", len(self.services.calls), self.drain_s)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and (
            not self.services.calls or time.monotonic() >= self.drain_deadline
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
        # Media frames are small; a peer sending huge frames is cut off, not buffered.
        ws_max_size=max(settings.max_message_bytes * 4, 1 << 20),
        ws="websockets-sansio",
        ws_ping_interval=None,
        proxy_headers=True,
        lifespan="on",
        **overrides,
    )
    return DrainingServer(config, services, settings.shutdown_drain_s)


def serve_forever(settings: Settings) -> int:
    from bridge.app import create_app

    app = create_app(settings)
    services = _services(app)
    server = make_server(settings, app, services)
    logger.info("bridge listening on http://%s:%d (public URL: %s)", settings.host,
                settings.port, settings.public_url or "not set")
    # What start-up allocated lives as long as the process: keep it out of every future
    # collection, whose pauses would otherwise stall every live call's audio.
    gc.collect()
    gc.freeze()
    server.run()
    return 0


def _services(app: Any) -> Any:
    """The Services object behind an app, through any ASGI wrapper (Socket.IO)."""
    while not hasattr(app, "state"):
        app = app.other_asgi_app
    return app.state.services


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; otherwise Nagle holds a `clear` back behind the last frame.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


async def _local_agent(host: str, port: int) -> int:
    from bridge.ai.local_agent import serve_local_agent

    server = await serve_local_agent(host, port)
    logger.info("local agent listening on %s", server.url)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
