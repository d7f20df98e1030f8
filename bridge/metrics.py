"""Process-wide figures: latency histograms and counters, constant memory.

Per-call lists of samples would grow with call length; a fixed log-spaced histogram keeps
every live call's cost flat and still gives p50/p99 to within a few percent. The runner and
the legs bump the plain attributes (``frames_in``, ``uplink``, ...); ``Services`` adds the
per-call figures (outcomes, barge-ins, error codes, response latency).

Two views, both read at request time: ``MetricsCollector`` exposes them in the Prometheus
text format through ``prometheus_client`` (``GET /metrics``; every label value comes from a
small fixed set, never a call sid or a number), and ``Metrics.snapshot`` as JSON
(``GET /metrics.json``, which the benchmark reads).
"""

from __future__ import annotations

import bisect
import math
import resource
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

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

        None, not NaN: the summary goes out as JSON (``GET /metrics.json``), which has no NaN,
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

    def buckets(self, exponents: range, scale: float) -> list[tuple[str, float]]:
        """Cumulative Prometheus buckets at the bin edges ``10 ** (e / 40)`` for ``e`` in
        ``exponents`` (multiplied by ``scale``, e.g. 1e-3 for ms → s), then ``+Inf``.

        Each bound is an exact edge of the fine bins, so the counts are exact.
        """
        out: list[tuple[str, float]] = []
        seen = 0
        last = 0
        for e in exponents:
            index = e + _OFFSET
            seen += sum(self.counts[last : index + 1])
            last = index + 1
            out.append((_float_text(_EDGES_MS[index] * scale), seen))
        out.append(("+Inf", self.n))
        return out


_OFFSET = 120  # _EDGES_MS[e + _OFFSET] == 10 ** (e / 40)
# Bucket bounds for the exposition: every quarter decade (ms: 10 µs … 100 s), and every
# half decade for call durations (s: 1 s … 1 day).
_LATENCY_BUCKETS = range(-80, 201, 10)
_DURATION_BUCKETS = range(0, 200, 20)


def _float_text(value: float) -> str:
    return f"{value:.6g}"


MAX_ANSWERS = 2000  # per call, like the record's turns
LATE_FRAME_S = 0.04  # two frame periods, as the benchmark counts late frames

# Outcomes of a call (``bridge_calls_ended_total{outcome}``).
OUTCOMES = ("completed", "caller_hung_up", "failed", "rejected_busy", "transferred")
# Barge-in triggers the Call knows; anything else counts as "other".
TRIGGERS = ("model", "local", "client")
# Why a call or connection was turned away by a limit (bridge.limits, bridge.breaker).
LIMITS = ("caller_cap", "connect_rate", "breaker_open", "cluster_cap")
# Peers given up on because they stopped reading or answering (Twilio, model, browser).
PEERS = ("twilio", "model", "browser")
# Realtime error codes worth their own series; the rest count as "other", so that a
# misbehaving server cannot grow the label set.
MODEL_ERROR_CODES = frozenset(
    {
        "session_expired",
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_truncate_invalid_item_id",
        "invalid_value",
        "invalid_api_key",
        "unknown_parameter",
        "rate_limit_exceeded",
        "server_error",
    }
)
_MAX_LEGS = 16  # leg names come from code; bounded all the same


@dataclass
class Metrics:
    uplink: Histogram = field(default_factory=Histogram)  # caller frame in → append out (ms)
    downlink: Histogram = field(default_factory=Histogram)  # model delta in → frames out (ms)
    clear: Histogram = field(default_factory=Histogram)  # barge-in trigger → clear out (ms)
    response: Histogram = field(default_factory=Histogram)  # caller stops → agent audio (ms)
    loop_lag: Histogram = field(default_factory=Histogram)  # event loop late by (ms)
    call_duration: Histogram = field(default_factory=Histogram)  # in seconds
    calls_started: int = 0
    calls_active: int = 0
    calls_failed: int = 0  # ended by an error rather than a hang-up
    frames_in: int = 0
    frames_out: int = 0  # audio frames (or chunks) handed to the caller's leg
    frames_dropped: int = 0  # bad input dropped with a log line
    model_errors: int = 0
    model_reconnects: int = 0  # model sessions replaced mid-call (lost, expired, recycled)
    truncate_errors: int = 0  # the model refused a conversation.item.truncate
    frames_late: int = 0  # paced agent audio released more than LATE_FRAME_S after due
    active_by_leg: dict[str, int] = field(default_factory=dict)
    ended_by_outcome: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    barge_ins: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRIGGERS, 0))
    model_error_codes: dict[str, int] = field(default_factory=dict)
    # Tool calls by outcome ("ok", "timeout", "http_500", …; bridge.tools) and their latency.
    tool_calls: dict[str, int] = field(default_factory=dict)
    tool_latency: Histogram = field(default_factory=Histogram)  # ms
    limited: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMITS, 0))
    peers_dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PEERS, 0))
    breaker_open: bool = False
    started: float = field(default_factory=time.monotonic)

    # ------------------------------------------------------------------ per call

    def call_started(self, leg: str) -> None:
        if leg not in self.active_by_leg and len(self.active_by_leg) >= _MAX_LEGS:
            leg = "other"
        self.calls_started += 1
        self.active_by_leg[leg] = self.active_by_leg.get(leg, 0) + 1

    def call_ended(self, leg: str, outcome: str, duration_s: float) -> None:
        if leg not in self.active_by_leg:
            leg = "other"
        self.active_by_leg[leg] = max(self.active_by_leg.get(leg, 0) - 1, 0)
        self.call_outcome(outcome)
        self.call_duration.add(max(duration_s, 0.0))

    def call_outcome(self, outcome: str) -> None:
        """Count a call's end; also for calls refused before they started (busy)."""
        if outcome not in self.ended_by_outcome:
            raise ValueError(f"unknown call outcome {outcome!r}")
        self.ended_by_outcome[outcome] += 1

    def barge_in(self, trigger: object) -> None:
        key = trigger if isinstance(trigger, str) and trigger in TRIGGERS else "other"
        self.barge_ins[key] = self.barge_ins.get(key, 0) + 1

    def tool_call(self, name: str, outcome: str, seconds: float) -> None:
        """An HTTP tool answered (or failed: ``outcome`` says how) after ``seconds``."""
        key = outcome if len(self.tool_calls) < 32 or outcome in self.tool_calls else "other"
        self.tool_calls[key] = self.tool_calls.get(key, 0) + 1
        self.tool_latency.add(seconds * 1000)

    def model_error(self, code: object) -> None:
        key = code if isinstance(code, str) and code in MODEL_ERROR_CODES else "other"
        self.model_error_codes[key] = self.model_error_codes.get(key, 0) + 1

    # ------------------------------------------------------------------ JSON

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "uplink": self.uplink.summary(),
            "downlink": self.downlink.summary(),
            "clear": self.clear.summary(),
            "response": self.response.summary(),
            "calls_started": self.calls_started,
            "calls_active": self.calls_active,
            "calls_failed": self.calls_failed,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": self.frames_dropped,
            "model_errors": self.model_errors,
            "model_reconnects": self.model_reconnects,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_kib": _rss_kib(),
            "uptime_s": time.monotonic() - self.started,
        }


class CallFigures:
    """One call's share of the figures that need a little per-call state: audio handed to
    the caller, and response latency (the caller's ``speech_stopped`` to the first agent
    audio handed to the leg after it). Also counts barge-ins and model errors from the
    call's timeline events (anything with ``kind`` and ``t``, ``detail``).

    A stop heard while the agent was still playing (a guarded greeting) starts no response
    measurement: that audio would not be the answer.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._stopped_at: float | None = None  # the caller stopped speaking; no answer yet
        # This call's answers: (when the first audio was handed over, latency in ms).
        self.answers: deque[tuple[float, float]] = deque(maxlen=MAX_ANSWERS)

    def handed(self, audio_chunks: int, now: float) -> None:
        """``audio_chunks`` of agent audio were handed to the leg at ``now``."""
        if audio_chunks:
            self.metrics.frames_out += audio_chunks
            if self._stopped_at is not None:
                ms = (now - self._stopped_at) * 1000
                self.metrics.response.add(ms)
                self.answers.append((now, ms))
                self._stopped_at = None

    def observe(self, events: list[Any], started_at: float, playing: bool) -> None:
        for event in events:
            match event.kind:
                case "speech_started":
                    self._stopped_at = None
                case "speech_stopped":
                    self._stopped_at = None if playing else started_at + event.t
                case "barge_in":
                    self.metrics.barge_in(event.detail.get("trigger"))
                case "model_error":
                    self.metrics.model_error(event.detail.get("code"))
                    if _truncate_error(event.detail):
                        self.metrics.truncate_errors += 1
                case _:
                    pass


def _truncate_error(detail: dict[str, Any]) -> bool:
    """A model error about a ``conversation.item.truncate`` (its code or its message says so)."""
    code, message = detail.get("code"), detail.get("message")
    return (isinstance(code, str) and "truncate" in code) or (
        isinstance(message, str) and "truncat" in message.lower()
    )


class RecordStats(Protocol):
    """What the exposition reads of ``bridge.store.writer.WriterStats``."""

    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def queued(self) -> int: ...


class MetricsCollector(Collector):
    """``Metrics`` (and the record writer's counters) as Prometheus families, at scrape time.

    Register it on a ``CollectorRegistry`` of the app's own: several apps may share a
    process (tests), and the process-global registry would mix their figures.
    """

    def __init__(
        self, metrics: Metrics, records: Callable[[], RecordStats | None] = lambda: None
    ) -> None:
        self.metrics = metrics
        self.records = records

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        active = GaugeMetricFamily("bridge_calls_active", "Live calls, by leg.", labels=["leg"])
        for leg in sorted({"phone", "softphone", *m.active_by_leg}):
            active.add_metric([leg], m.active_by_leg.get(leg, 0))
        yield active
        yield _counter("bridge_calls_started", "Calls started (any leg).", m.calls_started)
        ended = CounterMetricFamily(
            "bridge_calls_ended", "Calls ended (or refused), by outcome.", labels=["outcome"]
        )
        for outcome, count in m.ended_by_outcome.items():
            ended.add_metric([outcome], count)
        yield ended
        yield _histogram(
            "bridge_call_duration_seconds",
            "Call duration, start of the call to its end.",
            m.call_duration,
            _DURATION_BUCKETS,
            1.0,
        )
        yield _counter(
            "bridge_model_reconnects", "Model sessions reopened mid-call.", m.model_reconnects
        )
        barge = CounterMetricFamily(
            "bridge_barge_ins", "Barge-ins (agent cut off), by trigger.", labels=["trigger"]
        )
        for trigger, count in sorted(m.barge_ins.items()):
            barge.add_metric([trigger], count)
        yield barge
        yield _counter("bridge_model_errors", "Error events from the model.", m.model_errors)
        by_code = CounterMetricFamily(
            "bridge_model_errors_by_code",
            "Error events from the model, by code (unlisted codes: other).",
            labels=["code"],
        )
        for code, count in sorted(m.model_error_codes.items()):
            by_code.add_metric([code], count)
        yield by_code
        limited = CounterMetricFamily(
            "bridge_limited", "Calls or connections turned away, by limit.", labels=["limit"]
        )
        for limit, count in m.limited.items():
            limited.add_metric([limit], count)
        yield limited
        dropped = CounterMetricFamily(
            "bridge_peers_dropped",
            "Peers dropped for not reading or answering in time, by peer.",
            labels=["peer"],
        )
        for peer, count in m.peers_dropped.items():
            dropped.add_metric([peer], count)
        yield dropped
        yield GaugeMetricFamily(
            "bridge_model_breaker_open",
            "1 while the model circuit breaker is open (new calls get the fallback).",
            value=int(m.breaker_open),
        )
        tools = CounterMetricFamily(
            "bridge_tool_calls", "HTTP tool calls, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(m.tool_calls.items()):
            tools.add_metric([outcome], count)
        yield tools
        yield _counter(
            "bridge_truncate_errors",
            "Model errors answering a conversation.item.truncate (barge-in cut wrong).",
            m.truncate_errors,
        )
        yield _counter(
            "bridge_frames_late",
            "Paced agent audio released more than 40 ms after it was due (busy event loop).",
            m.frames_late,
        )
        yield _counter("bridge_frames_in", "Caller audio frames received.", m.frames_in)
        yield _counter("bridge_frames_out", "Audio chunks handed to caller legs.", m.frames_out)
        yield _counter(
            "bridge_frames_dropped",
            "Caller messages dropped (malformed, overflow).",
            m.frames_dropped,
        )
        for name, doc, hist in (
            ("bridge_uplink_seconds", "Caller frame in → audio sent to the model.", m.uplink),
            ("bridge_downlink_seconds", "Model audio in → frames out to the leg.", m.downlink),
            ("bridge_barge_in_clear_seconds", "Barge-in trigger → clear sent.", m.clear),
            (
                "bridge_response_latency_seconds",
                "Caller stops speaking → first agent audio of the answer sent to the caller.",
                m.response,
            ),
            ("bridge_event_loop_lag_seconds", "How late the event loop woke.", m.loop_lag),
            (
                "bridge_tool_call_seconds",
                "HTTP tool call → its answer (or failure).",
                m.tool_latency,
            ),
        ):
            yield _histogram(name, doc, hist, _LATENCY_BUCKETS, 1e-3)
        stats = self.records()
        if stats is not None:
            yield _counter("bridge_records_written", "Call records stored.", stats.written)
            lost = CounterMetricFamily(
                "bridge_records_lost",
                "Call records lost: dropped (queue full, writer closed) or failed (database).",
                labels=["reason"],
            )
            lost.add_metric(["dropped"], stats.dropped)
            lost.add_metric(["failed"], stats.failed)
            yield lost
            yield GaugeMetricFamily(
                "bridge_records_queued", "Call records waiting to be written.", stats.queued
            )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _histogram(
    name: str, doc: str, hist: Histogram, exponents: range, scale: float
) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, doc, buckets=hist.buckets(exponents, scale), sum_value=hist.total * scale
    )


def _rss_kib() -> int:
    """Current (not peak) resident set size, from /proc where it exists."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * (resource.getpagesize() // 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
