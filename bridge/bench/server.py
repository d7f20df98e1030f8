"""``python -m bridge.bench.server``: the server under test, in its own process, on one core.

    python -m bridge.bench.server --kind bridge --cpu 0 --model-url ws://127.0.0.1:P/v1/realtime

Runs what ``bridge serve`` runs (``create_app`` + ``make_server``, settings from the
environment: give it ``OPENAI_API_KEY``, ``TWILIO_AUTH_TOKEN``, ``LOG_LEVEL`` ...), or the
minimal relay (``--kind relay``), on a free loopback port, under the measuring ``Probe``.
``PUBLIC_URL`` is set to the port it got, so signatures are checked as in production.
Prints one JSON line ``{"port": ..., "pid": ...}`` once it accepts connections, then serves
until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import threadpoolctl

from bridge.bench.probe import Probe
from bridge.config import Settings
from bridge.server import free_socket, make_server, services_of, settle_process


def pin(cpu: int | None) -> None:
    """Run this process on one CPU, where the OS lets us: every thread it has (BLAS starts
    its own at import) and those it starts later; and its math on one thread, as one CPU
    has room for."""
    if cpu is not None and cpu >= 0 and hasattr(os, "sched_setaffinity"):
        for thread in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(thread), {cpu})
        threadpoolctl.threadpool_limits(1, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.server")
    parser.add_argument("--kind", choices=("bridge", "relay"), default="bridge")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--model-url", required=True, help="Realtime endpoint (local agent)")
    parser.add_argument(
        "--ws", default=None, help="uvicorn websocket implementation (default: what serve uses)"
    )
    args = parser.parse_args(argv)
    pin(args.cpu)
    # The event loop `bridge serve` gets from uvicorn: uvloop where it is installed.
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(args.kind, args.model_url, ws=args.ws))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def bench_settings(port: int) -> Settings:
    """The server's settings from the environment, for a loopback server on ``port``
    (also the workers' of ``bridge.bench.pool``); logging set up at their level."""
    env = dict(os.environ)
    if env.get("TWILIO_AUTH_TOKEN"):
        env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    # Every simulated call comes from one number and one address: no per-caller caps.
    env.setdefault("MAX_CALLS_PER_CALLER", "0")
    env.setdefault("CONNECT_RATE_PER_IP", "0")
    # The relay checks no signatures by design; it only ever listens on loopback.
    env.setdefault("ALLOW_UNSIGNED_WEBHOOKS", "1")
    settings = Settings.from_env(env, env_file=None)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    return settings


async def serve(kind: str, model_url: str, *, ws: str | None = None) -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = bench_settings(port)
    app: Any
    services: Any
    if kind == "bridge":
        from bridge.app import create_app

        app = create_app(settings, model_url=model_url)
        services = services_of(app)
        metrics = services.metrics
    else:
        from bridge.bench.relay import Relay

        relay = Relay(settings, model_url)
        app, services, metrics = relay.app, relay, relay.metrics
    probe = Probe(app, metrics)
    server = make_server(settings, probe, services)
    if ws:
        server.config.ws = ws  # read when the server loads its config, in serve()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            return 1
        await asyncio.sleep(0.01)
    settle_process()  # as ``bridge serve`` does; both servers, so the comparison is fair
    probe.start()
    print(json.dumps({"port": port, "pid": os.getpid(), "kind": kind}), flush=True)
    await task
    return 0


if __name__ == "__main__":
    sys.exit(main())
