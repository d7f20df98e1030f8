"""The whole server's figures when ``bridge serve --workers N`` runs N worker processes.

Each worker keeps its own ``Metrics`` (``bridge.metrics``); this module lets the worker that
answers ``GET /metrics`` or ``GET /metrics.json`` speak for all of them:

* every worker writes its **state** (every ``Metrics`` field, histogram bins included, the
  record writer's counts, its CPU seconds and RSS) as JSON to ``<dir>/worker-<id>.json``,
  atomically (write, then rename), about every second and before it answers a scrape;
* the supervisor (``bridge.workers``) folds the state of a worker that died into
  ``<dir>/retired.json`` (``retire``): its counters stay in the totals, so they never go
  backwards, its gauges drop to zero and its live calls count as failed;
* the answering worker **merges** its own live state with the other workers' files and the
  retired one (``merge``: counters, histograms and gauges summed, the breaker open if any
  worker's is) and renders the result with the same ``MetricsCollector`` as one process.

``prometheus_client``'s multiprocess mode does not fit: ``Metrics`` is plain attributes read
at scrape time, not ``prometheus_client`` metric objects. The merge and ``retire`` are pure;
``MetricsPool`` is the little file I/O around them. Nothing here touches ``Metrics``' own
rules or the single-process exposition (one worker: no pool, output unchanged).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.metrics import Histogram, Metrics, MetricsCollector, RecordStats, _rss_kib

State = dict[str, Any]  # one worker's (or the retired workers') figures, JSON-able
RETIRED = "retired.json"
_RECORD_FIELDS = ("written", "dropped", "failed", "queued")
_GAUGES = ("calls_active", "breaker_open")  # zeroed when a worker dies (with active_by_leg)
_OLDEST = ("started",)  # merged by min, not summed (CLOCK_MONOTONIC is system-wide)
_HISTOGRAMS = frozenset(f.name for f in fields(Metrics) if f.type in ("Histogram", Histogram))


@dataclass(frozen=True)
class RecordCounts:
    """The record writer's counts, summed over workers (``RecordStats`` for the collector)."""

    written: int = 0
    dropped: int = 0
    failed: int = 0
    queued: int = 0


# ---------------------------------------------------------------------- pure: state


def state_of(
    metrics: Metrics,
    records: RecordStats | None,
    *,
    worker: str,
    slot: int,
    pid: int,
    cpu_s: float,
    rss_kib: int,
) -> State:
    """One worker's figures as a JSON-able dict."""
    figures: dict[str, Any] = {}
    for f in fields(Metrics):
        value = getattr(metrics, f.name)
        if isinstance(value, Histogram):
            value = {
                "counts": list(value.counts),
                "n": value.n,
                "total": value.total,
                "max": value.max,
            }
        elif isinstance(value, dict):
            value = dict(value)
        figures[f.name] = value
    return {
        "worker": worker,
        "slot": slot,
        "pid": pid,
        "metrics": figures,
        "records": None
        if records is None
        else {name: getattr(records, name) for name in _RECORD_FIELDS},
        "cpu_s": cpu_s,
        "rss_kib": rss_kib,
    }


def metrics_from(figures: Mapping[str, Any]) -> Metrics:
    """A ``Metrics`` holding ``figures`` (the ``"metrics"`` of a state); unknown keys ignored."""
    metrics = Metrics()
    for f in fields(Metrics):
        if f.name not in figures:
            continue
        value = figures[f.name]
        if isinstance(getattr(metrics, f.name), Histogram):
            value = Histogram(list(value["counts"]), value["n"], value["total"], value["max"])
        elif isinstance(value, dict):
            value = dict(value)
        setattr(metrics, f.name, value)
    return metrics


def _merge_value(name: str, a: Any, b: Any) -> Any:
    if name in _OLDEST:
        return min(a, b)
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) or bool(b)
    if name in _HISTOGRAMS:
        counts = [x + y for x, y in zip(a["counts"], b["counts"], strict=True)]
        return {
            "counts": counts,
            "n": a["n"] + b["n"],
            "total": a["total"] + b["total"],
            "max": max(a["max"], b["max"]),
        }
    if isinstance(a, dict):
        out = dict(a)
        for key, count in b.items():
            out[key] = out.get(key, 0) + count
        return out
    return a + b


def merge(states: list[State]) -> State:
    """The figures of several workers as one: counters, histograms and gauges summed.

    The result's ``"workers"`` lists each input's worker, slot, pid, calls, CPU and RSS (a
    retired state contributes its totals but is not listed).
    """
    figures: dict[str, Any] = {}
    records: dict[str, int] | None = None
    cpu_s, rss_kib = 0.0, 0
    listed = []
    for state in states:
        for name, value in state["metrics"].items():
            figures[name] = (
                value if name not in figures else _merge_value(name, figures[name], value)
            )
        if state.get("records") is not None:
            records = {k: (records or {}).get(k, 0) + state["records"][k] for k in _RECORD_FIELDS}
        cpu_s += state["cpu_s"]
        rss_kib += state["rss_kib"]
        if "worker" in state:
            listed.append(
                {
                    "worker": state["worker"],
                    "slot": state["slot"],
                    "pid": state["pid"],
                    "calls_started": state["metrics"].get("calls_started", 0),
                    "calls_active": state["metrics"].get("calls_active", 0),
                    "cpu_s": state["cpu_s"],
                    "rss_kib": state["rss_kib"],
                }
            )
    listed.sort(key=lambda w: (w["slot"], w["worker"]))
    return {
        "metrics": figures,
        "records": records,
        "cpu_s": cpu_s,
        "rss_kib": rss_kib,
        "workers": listed,
    }


def retire(retired: State | None, dead: State) -> tuple[State, int]:
    """Fold a dead worker's last state into the retired figures; also its live calls lost.

    Its counters stay (so totals never go backwards), its gauges go to zero, and each call
    it had live counts as started and failed. ``"ids"`` lists the retired workers, so a
    reader that still finds a dead worker's file does not count it twice.
    """
    figures = dict(dead["metrics"])
    lost = int(figures.get("calls_active", 0))
    for name in _GAUGES:
        if name in figures:
            figures[name] = type(figures[name])(0)
    figures["active_by_leg"] = dict.fromkeys(figures.get("active_by_leg", {}), 0)
    figures["calls_failed"] = figures.get("calls_failed", 0) + lost
    outcomes = dict(figures.get("ended_by_outcome", {}))
    outcomes["failed"] = outcomes.get("failed", 0) + lost
    figures["ended_by_outcome"] = outcomes
    records = dead.get("records")
    zeroed: State = {
        "metrics": figures,
        "records": None if records is None else {**records, "queued": 0},
        "cpu_s": dead["cpu_s"],  # a counter: kept
        "rss_kib": 0,
    }
    ids = [*(retired or {}).get("ids", []), dead["worker"]]
    merged = merge([retired, zeroed] if retired is not None else [zeroed])
    merged.pop("workers")
    merged["ids"] = ids
    return merged, lost


# ---------------------------------------------------------------------- pure: exposition


class WorkersCollector(Collector):
    """The process figures of a merged state: summed, and per worker slot."""

    def __init__(self, merged: State) -> None:
        self.merged = merged

    def collect(self) -> Iterator[Any]:
        workers = self.merged["workers"]
        yield GaugeMetricFamily("bridge_workers", "Live worker processes.", value=len(workers))
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "User and system CPU seconds of every worker (those that died included).",
            value=self.merged["cpu_s"],
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory of the live workers, summed.",
            value=self.merged["rss_kib"] * 1024,
        )
        cpu = CounterMetricFamily(
            "bridge_worker_cpu_seconds", "CPU seconds, by worker slot.", labels=["worker"]
        )
        rss = GaugeMetricFamily(
            "bridge_worker_resident_memory_bytes",
            "Resident memory, by worker slot.",
            labels=["worker"],
        )
        for w in workers:
            cpu.add_metric([str(w["slot"])], w["cpu_s"])
            rss.add_metric([str(w["slot"])], w["rss_kib"] * 1024)
        yield cpu
        yield rss


def exposition(merged: State) -> bytes:
    """The Prometheus text of a merged state: the one-process families, then the workers'."""
    registry = CollectorRegistry()
    counts = merged["records"]
    stats = None if counts is None else RecordCounts(**counts)
    registry.register(MetricsCollector(metrics_from(merged["metrics"]), lambda: stats))
    registry.register(WorkersCollector(merged))
    return generate_latest(registry)


def json_snapshot(merged: State, answered_by: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /metrics.json`` of a merged state: the one-process keys, summed, and per worker."""
    snapshot = metrics_from(merged["metrics"]).snapshot()
    snapshot["cpu_s"] = merged["cpu_s"]
    snapshot["rss_kib"] = merged["rss_kib"]
    snapshot["workers"] = merged["workers"]
    snapshot["answered_by"] = dict(answered_by)
    return snapshot


# ---------------------------------------------------------------------- files


class MetricsPool:
    """One worker's side of the shared directory: publish its state, read everyone's."""

    def __init__(self, directory: str | Path, worker: str, slot: int) -> None:
        self.dir = Path(directory)
        self.worker = worker
        self.slot = slot

    def publish(self, metrics: Metrics, records: RecordStats | None) -> State:
        """Write this worker's state now (and return it)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        state = state_of(
            metrics,
            records,
            worker=self.worker,
            slot=self.slot,
            pid=os.getpid(),
            cpu_s=usage.ru_utime + usage.ru_stime,
            rss_kib=_rss_kib(),
        )
        write_atomically(self.dir / f"worker-{self.worker}.json", state)
        return state

    def whole(self, metrics: Metrics, records: RecordStats | None) -> State:
        """The whole server's figures, ours fresh (a scrape)."""
        return self.merged(self.publish(metrics, records))

    def merged(self, own: State) -> State:
        """Our live state with every other live worker's last one and the retired figures."""
        others = []
        # Workers first, then the retired file: a worker retired meanwhile is in it (the
        # supervisor writes it before removing the worker's file), and counted once.
        for path in sorted(self.dir.glob("worker-*.json")):
            state = read_state(path)
            if state is not None and state.get("worker") != self.worker:
                others.append(state)
        retired = read_state(self.dir / RETIRED)
        gone = set(retired["ids"]) if retired is not None else set()
        states = [own, *(s for s in others if s["worker"] not in gone)]
        return merge([*states, retired] if retired is not None else states)

    def answered_by(self) -> dict[str, Any]:
        return {"worker": self.worker, "slot": self.slot, "pid": os.getpid()}


def write_atomically(path: Path, state: State) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, separators=(",", ":")))
    os.replace(tmp, path)


def read_state(path: Path) -> State | None:
    """A state file, or None when it is gone (a worker retired) or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        state: State = json.loads(path.read_text())
        return state
    return None


def retire_worker(directory: str | Path, worker: str) -> int | None:
    """Fold a dead worker's file into the retired figures (the supervisor calls this).

    Returns how many live calls it had when it last wrote, or None if it never wrote.
    """
    root = Path(directory)
    path = root / f"worker-{worker}.json"
    dead = read_state(path)
    if dead is None:
        return None
    retired, lost = retire(read_state(root / RETIRED), dead)
    write_atomically(root / RETIRED, retired)
    path.unlink(missing_ok=True)
    return lost
