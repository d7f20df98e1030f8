"""``python -m bridge.bench.pool``: the bridge under test as N worker processes on one port.

    python -m bridge.bench.pool --workers 2 --model-url ws://127.0.0.1:P/v1/realtime

What ``bridge serve --workers N`` runs (``bridge.workers``' ``Supervisor``: one listening
socket, N forked workers, ``/metrics.json`` merged across them), settings from the
environment as ``bridge.bench.server`` takes them, with each worker's app under its own
``Probe`` (``worker=True``: it starts with the worker's lifespan and answers with its pid
and raw histograms). Not pinned to a CPU: N workers on one core would measure nothing.

Prints one JSON line ``{"port", "pid", "kind", "workers", "worker_pids", "profile_dir"}``
once every worker has answered ``/bench/stats``, then serves until SIGTERM, which the
supervisor forwards (the workers drain, as under ``bridge serve``). A worker's cProfile
dump goes to ``<profile_dir>/worker-<pid>.pstats`` when the profiler stops.

Owns only this wiring; asking every worker and merging their answers is
``bridge.bench.workers``'. It must not change what a worker runs beyond the probe.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

from bridge.app import create_app
from bridge.bench.probe import Probe
from bridge.bench.server import bench_settings
from bridge.bench.workers import gather, request
from bridge.config import Settings
from bridge.metrics_pool import MetricsPool
from bridge.server import services_of
from bridge.services import Services
from bridge.workers import Supervisor, listening_socket

READY_S = 60.0  # the bench waits this long for the ready line anyway


def probed_app(
    settings: Settings, pool: MetricsPool, *, model_url: str, profile_dir: str
) -> tuple[Any, Services]:
    """One worker's app (called in the worker, after the fork) under its own probe."""
    app = create_app(settings, model_url=model_url, metrics_pool=pool)
    services = services_of(app)
    probe = Probe(app, services.metrics, worker=True)
    probe.pstats_path = os.path.join(profile_dir, f"worker-{os.getpid()}.pstats")
    return probe, services


def announce(supervisor: Supervisor, port: int, profile_dir: str) -> None:
    """Print the ready line once every worker answers (a thread of the supervisor)."""
    deadline = time.monotonic() + READY_S
    # Only once every worker is forked: a fork copies no thread, but this one's urllib
    # calls would otherwise run while the supervisor forks.
    while len(supervisor.workers) < supervisor.count and time.monotonic() < deadline:
        time.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            answers = gather(lambda: request(base_url, "GET", "/bench/stats"), supervisor.count)
        except (OSError, RuntimeError):  # workers still starting
            time.sleep(0.05)
            continue
        line = {
            "port": port,
            "pid": os.getpid(),
            "kind": "bridge",
            "workers": supervisor.count,
            "worker_pids": sorted(a["pid"] for a in answers),
            "profile_dir": profile_dir,
        }
        print(json.dumps(line), flush=True)
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.pool")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--kind", choices=("bridge",), default="bridge")
    parser.add_argument("--model-url", required=True, help="Realtime endpoint (local agent)")
    args = parser.parse_args(argv)
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = bench_settings(port)
    with sock, tempfile.TemporaryDirectory(prefix="bridge-bench-pool-") as scratch:
        figures = os.path.join(scratch, "figures")
        profile_dir = os.path.join(scratch, "profiles")
        os.mkdir(figures)
        os.mkdir(profile_dir)
        factory = functools.partial(probed_app, model_url=args.model_url, profile_dir=profile_dir)
        supervisor = Supervisor(settings, max(1, args.workers), sock, figures, factory)
        threading.Thread(target=announce, args=(supervisor, port, profile_dir), daemon=True).start()
        return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
