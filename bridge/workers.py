"""``bridge serve --workers N``: a supervisor and N worker processes on one listening socket.

The supervisor binds the socket once and forks the workers, which inherit it (the way
uvicorn's and gunicorn's workers share theirs; the kernel hands each new connection to
whichever worker accepts first). Each worker is a whole bridge: the same ``create_app``
and ``DrainingServer`` as one-process ``bridge serve``, with the same ``Settings`` object,
so the stream-token secret a webhook answered by one worker signs is the one the worker
that takes the media stream checks. ``/metrics`` and ``/metrics.json`` speak for every
worker (``bridge.metrics_pool``, through a temporary directory the supervisor owns).

Signals: SIGTERM or SIGINT to the supervisor is forwarded to every worker, which drains as
one process does (not ready at once, new calls refused, live calls finish, then it exits);
the supervisor exits 0 once they all have. A second signal is forwarded too: the workers
stop at once. Workers run in their own process group, so a terminal's Ctrl-C reaches them
once, through the supervisor; and they get SIGTERM if the supervisor dies.

A worker that dies while the server is not draining is replaced, with a WARNING naming it
and the live calls it took with it (from its last figures, which count them as failed).
One that fails at start-up (uvicorn's exit code 3) stops the server instead: its
replacement would fail the same way. While draining, nothing is replaced.

Owns: the worker processes, the supervisor's signals, the figures directory. Does not
touch: the app, the drain itself (``bridge.server``), the merge of figures
(``bridge.metrics_pool``); it parses no arguments (``bridge.cli`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from bridge.app import create_app
from bridge.config import Settings
from bridge.metrics_pool import MetricsPool, retire_worker
from bridge.server import DrainingServer, make_server, services_of, settle_process
from bridge.services import Services

logger = logging.getLogger("bridge.workers")

STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: the app or its lifespan did not start
BACKLOG = 2048  # uvicorn's default
MAX_WORKERS = 1024
_FORK = multiprocessing.get_context("fork")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# What each worker serves: the ASGI app and its Services (``bridge bench`` wraps the app).
AppFactory = Callable[[Settings, MetricsPool], tuple[Any, Services]]


def bridge_app(settings: Settings, pool: MetricsPool) -> tuple[Any, Services]:
    """The app every worker of ``bridge serve --workers N`` runs."""
    app = create_app(settings, metrics_pool=pool)
    return app, services_of(app)


def parse_workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` (0): one per core this process may run on."""
    if text.strip().lower() == "auto":
        return 0
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or 'auto'") from None
    if not 0 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{count}: expected 0 (auto) to {MAX_WORKERS}")
    return count


def worker_count(requested: int) -> int:
    """How many workers ``requested`` means: itself, or for 0 the cores we may use."""
    return requested if requested > 0 else len(os.sched_getaffinity(0))


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's one socket, bound and listening before any worker exists."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly, as ``bridge.server.free_socket`` (TCP_NODELAY on accept).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    slot: int  # its place, 0 … N-1: kept by its replacement (a bounded metrics label)
    name: str  # unique for the server's life: "3" is the third worker started
    process: BaseProcess


class Supervisor:
    """Starts the workers, forwards stop signals, replaces workers that die, reaps them all."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        sock: socket.socket,
        figures: str,
        app_factory: AppFactory = bridge_app,
    ):
        self.settings = settings
        self.app_factory = app_factory
        self.count = count
        self.sock = sock
        self.figures = figures
        self.workers: dict[int, _Worker] = {}
        self.draining = False
        self.failed = False
        self._started = 0
        self._wake_r, self._wake_w = socket.socketpair()

    def run(self) -> int:
        """Serve until stopped; 0 once every worker has exited (1 if one failed to start)."""
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, _noted) for sig in _STOP_SIGNALS}
        try:
            # What the supervisor allocated is shared with every fork: keep it out of the
            # workers' collections (which would also copy its pages).
            gc.collect()
            gc.freeze()
            for slot in range(self.count):
                self._spawn(slot)
            while self.workers:
                sentinels = {w.process.sentinel: w for w in self.workers.values()}
                ready = wait([self._wake_r, *sentinels])
                if self._wake_r in ready:
                    self._on_signals()
                for key in ready:
                    if isinstance(key, int) and key in sentinels:
                        self._reap(sentinels[key])
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._wake_r.close()
            self._wake_w.close()
        logger.info("all workers exited")
        return 1 if self.failed else 0

    def stop(self) -> None:
        """Drain every worker (again: stop them at once)."""
        if not self.draining:
            self.draining = True
            logger.info("draining %d workers: new calls refused, live calls finish", self.count)
        else:
            logger.info("stop signal again: workers stop now")
        for worker in self.workers.values():
            _signal(worker, signal.SIGTERM)

    def _on_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            received = self._wake_r.recv(256)
            if any(sig in _STOP_SIGNALS for sig in received):
                self.stop()

    def _spawn(self, slot: int) -> None:
        self._started += 1
        name = str(self._started)
        process = _FORK.Process(
            target=_worker_main,
            args=(
                self.settings,
                self.sock,
                self.figures,
                name,
                slot,
                self.app_factory,
                self._wake_r,
                self._wake_w,
            ),
            name=f"bridge-worker-{slot}",
        )
        # Blocked across the fork: a stop signal the new worker gets before its handler is
        # in place waits for it rather than hitting the supervisor's inherited one.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.workers[slot] = _Worker(slot, name, process)
        logger.info("worker %d started (pid %s)", slot, process.pid)

    def _reap(self, worker: _Worker) -> None:
        worker.process.join()
        del self.workers[worker.slot]
        code = worker.process.exitcode
        lost = retire_worker(self.figures, worker.name) or 0
        pid = worker.process.pid
        if code == 0 and self.draining:
            logger.info("worker %d (pid %s) drained and exited", worker.slot, pid)
            return
        if code == STARTUP_FAILURE:
            logger.error("worker %d (pid %s) could not start: stopping", worker.slot, pid)
            self.failed = True
            if not self.draining:
                self.stop()
            return
        logger.warning(
            "worker %d (pid %s) died (%s): %d live call%s lost (counted failed)%s",
            worker.slot,
            pid,
            _how(code),
            lost,
            "" if lost == 1 else "s",
            "" if self.draining else "; starting a replacement",
        )
        if not self.draining:
            self._spawn(worker.slot)


def serve_workers(settings: Settings, count: int) -> int:
    """What ``bridge serve --workers N`` (N > 1) runs: exit code 0 once drained."""
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    host, port = sock.getsockname()[:2]
    logger.info(
        "bridge listening on http://%s:%d with %d workers (public URL: %s)",
        host if sock.family == socket.AF_INET else f"[{host}]",
        port,
        count,
        settings.public_url or "not set",
    )
    with sock, tempfile.TemporaryDirectory(prefix="bridge-figures-") as figures:
        return Supervisor(settings, count, sock, figures).run()


# ---------------------------------------------------------------------- in the worker


def _worker_main(
    settings: Settings,
    sock: socket.socket,
    figures: str,
    name: str,
    slot: int,
    app_factory: AppFactory,
    *supervisor_only: socket.socket,
) -> None:
    """A worker: the one-process bridge on the inherited socket. Exits 0 once drained."""
    signal.set_wakeup_fd(-1)
    for inherited in supervisor_only:
        inherited.close()
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor only; it forwards it
    _die_with_parent()
    server: DrainingServer | None = None
    early: list[int] = []

    def on_signal(sig: int, frame: FrameType | None) -> None:
        # Before the server exists: remembered. Once it runs, uvicorn's own handler is in
        # place; after it stops, uvicorn re-raises the signal it drained on, which lands
        # here again and is harmless (the process then exits 0, not by the signal).
        if server is None:
            early.append(sig)
        else:
            server.handle_exit(sig, frame)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        app, services = app_factory(settings, MetricsPool(figures, name, slot))
        server = make_server(settings, app, services)
    except Exception:
        logger.exception("worker %d could not build the app", slot)
        sys.exit(STARTUP_FAILURE)
    if early:
        server.handle_exit(early[0], None)
    settle_process()
    server.run(sockets=[sock])


def _die_with_parent() -> None:
    """Linux: SIGTERM (a drain) to this worker when the supervisor dies, however it dies."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------- helpers


def _noted(sig: int, frame: FrameType | None) -> None:
    """The supervisor's handler: the signal is read from the wake-up socket instead."""


def _signal(worker: _Worker, sig: signal.Signals) -> None:
    if worker.process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, sig)


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"exit code {code}"
