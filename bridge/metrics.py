"""Process-wide figures: latency histograms and counters, constant memory.

Per-call lists of samples would grow with call length; a fixed log-spaced histogram keeps
every live call's cost flat and still gives p50/p99 to within a few percent. Served as JSON
at ``GET /metrics`` (the benchmark reads it from the server process).
"""

from __future__ import annotations

import bisect
import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any

# 1 µs … 100 s, 40 bins per decade (≈6 % wide).
_EDGES_MS = [10 ** (e / 40) for e in range(-120, 201)]


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(_EDGES_MS) + 1))
    n: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, ms: float) -> None:
        self.counts[bisect.bisect_left(_EDGES_MS, ms)] += 1
        self.n += 1
        self.total += ms
        if ms > self.max:
            self.max = ms

    def quantile(self, q: float) -> float:
        if self.n == 0:
            return math.nan
        rank = q * (self.n - 1)
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen > rank:
                return min(_EDGES_MS[min(i, len(_EDGES_MS) - 1)], self.max)
        return self.max

    def summary(self) -> dict[str, float | None]:
        """n and p50/p99/max/mean in ms; with no samples (n = 0) the figures are None.

        None, not NaN: the summary goes out as JSON (``GET /metrics``), which has no NaN,
        and not 0, which would read as a measured zero latency.
        """
        if self.n == 0:
            return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
        return {
            "n": self.n,
            "p50_ms": round(self.quantile(0.5), 4),
            "p99_ms": round(self.quantile(0.99), 4),
            "max_ms": round(self.max, 4),
            "mean_ms": round(self.total / self.n, 4),
        }


@dataclass
class Metrics:
    uplink: Histogram = field(default_factory=Histogram)  # caller frame in → append out
    downlink: Histogram = field(default_factory=Histogram)  # model delta in → frames out
    clear: Histogram = field(default_factory=Histogram)  # barge-in trigger → clear out
    calls_started: int = 0
    calls_active: int = 0
    calls_failed: int = 0  # ended by an error rather than a hang-up
    frames_in: int = 0
    frames_dropped: int = 0  # bad input dropped with a log line
    model_errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "uplink": self.uplink.summary(),
            "downlink": self.downlink.summary(),
            "clear": self.clear.summary(),
            "calls_started": self.calls_started,
            "calls_active": self.calls_active,
            "calls_failed": self.calls_failed,
            "frames_in": self.frames_in,
            "frames_dropped": self.frames_dropped,
            "model_errors": self.model_errors,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_kib": _rss_kib(),
            "uptime_s": time.monotonic() - self.started,
        }


def _rss_kib() -> int:
    """Current (not peak) resident set size, from /proc where it exists."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * (resource.getpagesize() // 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
