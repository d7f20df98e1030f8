"""The processes of a benchmark run, and what the run reads about them and the machine.

Owns the child processes ``bridge bench`` starts (each speaks one JSON object per stdout
line and dies with its parent), the servers under test as seen over HTTP (``/bench/stats``,
``/bench/reset``, the profiler switches), and CPU accounting from ``/proc``: a process's
own CPU seconds and the whole machine's busy time; and where each process is pinned (the
server on one CPU, the agent and the ``--load-procs`` load processes on the others). What a
step does with them, and the ramp: ``bridge.bench.main``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Proc:
    """A child process that speaks one JSON object per stdout line."""

    name: str
    popen: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def spawn(
        cls, name: str, args: list[str], env: dict[str, str] | None = None, stdin: bool = False
    ) -> Proc:
        popen = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        proc = cls(name, popen)
        threading.Thread(target=proc._pump, daemon=True).start()
        return proc

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"{self.name} exited (code {self.popen.wait()})")
            with contextlib.suppress(ValueError):
                message: dict[str, Any] = json.loads(line)
                return message

    def tell(self, command: str) -> None:
        assert self.popen.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.popen.stdin.write(command + "\n")
            self.popen.stdin.flush()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the bench dies, so no server outlives a run."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0.0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """A server under test: the bridge or the relay."""

    kind: str
    proc: Proc
    base_url: str
    auth_token: str | None
    rss_base_kib: int = 0

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url + path, method=method, data=b"" if method == "POST" else None
        )
        with _NO_PROXY.open(request, timeout=60.0) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/bench/stats")

    def post(self, path: str) -> dict[str, Any]:
        return self._call("POST", path)

    def worker_pids(self) -> list[int]:
        """The server's worker processes besides ``proc`` (``bridge.bench.workers``)."""
        return []

    def wait_idle(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stats()["metrics"]["calls_active"] and time.monotonic() < deadline:
            time.sleep(0.2)


def pinned_cpus(no_pin: bool) -> tuple[int, int] | None:
    """The server's CPU and the agent's: the first two this process may use."""
    if no_pin or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def split_calls(n: int, parts: int) -> list[int]:
    """``n`` calls over at most ``parts`` load processes, as evenly as whole calls go."""
    parts = max(1, min(parts, n)) if n else 1
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def load_cpus(cpus: tuple[int, int] | None) -> list[int]:
    """The CPUs of the agent and the load processes (``--load-procs``): every CPU this
    process may use but the server's, the agent's first. Empty when nothing is pinned."""
    if cpus is None:
        return []
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return [cpus[1], *(c for c in allowed if c not in cpus)]


def load_cpu(load: list[int], i: int) -> int | None:
    """Load process ``i``'s CPU: the ones after the agent's first, then round the list."""
    return load[(i + 1) % len(load)] if load else None


def load_cores(load: list[int], procs: int) -> int:
    """How many cores the agent and ``procs`` load processes share: the CPUs they are
    pinned to, or, unpinned, every CPU of the machine (the server's too)."""
    if not load:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return len({load[0], *(load_cpu(load, i) for i in range(max(1, procs)))})


def machine(cpus: tuple[int, int] | None) -> dict[str, Any]:
    """What the run was measured on, and which CPUs its processes were pinned to."""
    model = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "pinned": {"server": cpus[0], "agent_and_callers": cpus[1]} if cpus else None,
    }
