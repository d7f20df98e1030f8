"""The whole server's figures from several workers' (``bridge.metrics_pool``): pure merge,
a dead worker's retirement, and the exposition checked with ``prometheus_client``'s parser."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Settings
from bridge.metrics import Metrics, MetricsCollector
from bridge.metrics_pool import (
    RETIRED,
    MetricsPool,
    RecordCounts,
    State,
    exposition,
    json_snapshot,
    merge,
    metrics_from,
    read_state,
    retire,
    retire_worker,
    state_of,
)
from bridge.workers import parse_workers, worker_count


def busy_metrics(calls: int, active: int, lat_ms: list[float], leg: str = "phone") -> Metrics:
    m = Metrics()
    for _ in range(calls):
        m.call_started(leg)
    for _ in range(calls - active):
        m.call_ended(leg, "completed", 3.0)
    m.calls_active = active
    for ms in lat_ms:
        m.uplink.add(ms)
    m.frames_in = 50 * calls
    m.barge_in("model")
    m.model_error("session_expired")
    m.tool_call("lookup", "ok", 0.1)
    return m


def state(m: Metrics, worker: str, slot: int, records: RecordCounts | None = None) -> State:
    return state_of(m, records, worker=worker, slot=slot, pid=1000 + slot, cpu_s=1.5, rss_kib=100)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_state_round_trips_every_field():
    m = busy_metrics(3, 1, [1.0, 2.5, 40.0])
    back = metrics_from(state(m, "1", 0)["metrics"])
    assert back == m


def test_merge_sums_counters_histograms_and_gauges():
    a = busy_metrics(3, 1, [1.0, 2.0], leg="phone")
    b = busy_metrics(2, 2, [5.0, 80.0, 0.5], leg="softphone")
    b.breaker_open = True
    merged = merge([state(a, "1", 0, RecordCounts(4, 1, 0, 2)), state(b, "2", 1)])
    m = metrics_from(merged["metrics"])
    assert m.calls_started == 5 and m.calls_active == 3
    assert m.active_by_leg == {"phone": 1, "softphone": 2}
    assert m.ended_by_outcome["completed"] == 2
    assert m.barge_ins["model"] == 2 and m.model_error_codes == {"session_expired": 2}
    assert m.tool_calls == {"ok": 2} and m.frames_in == 250
    assert m.uplink.n == 5 and m.uplink.max == 80.0 and m.uplink.total == pytest.approx(88.5)
    assert m.uplink.counts == [x + y for x, y in zip(a.uplink.counts, b.uplink.counts, strict=True)]
    assert m.breaker_open  # open anywhere: open
    assert m.started == min(a.started, b.started)
    assert merged["records"] == {"written": 4, "dropped": 1, "failed": 0, "queued": 2}
    assert merged["cpu_s"] == 3.0 and merged["rss_kib"] == 200
    assert [(w["slot"], w["calls_started"], w["calls_active"]) for w in merged["workers"]] == [
        (0, 3, 1),
        (1, 2, 2),
    ]


def test_one_worker_merged_renders_like_one_process():
    m = busy_metrics(4, 1, [1.0, 3.0, 900.0])
    alone = samples(generate_latest(_registry(m)))
    merged = samples(exposition(merge([state(m, "1", 0)])))
    assert {
        k: v for k, v in merged.items() if k[0].startswith("bridge_") and "worker" not in k[0]
    } == alone


def _registry(m: Metrics) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(MetricsCollector(m))
    return registry


def test_exposition_of_two_workers_counts_both_and_lists_each():
    a, b = busy_metrics(3, 1, [2.0]), busy_metrics(2, 0, [2.0, 2.0])
    text = samples(exposition(merge([state(a, "1", 0), state(b, "7", 1)])))
    assert text[("bridge_calls_started_total", ())] == 5
    assert text[("bridge_calls_active", (("leg", "phone"),))] == 1
    assert text[("bridge_uplink_seconds_count", ())] == 3
    assert text[("bridge_workers", ())] == 2
    assert text[("process_cpu_seconds_total", ())] == 3.0
    assert text[("bridge_worker_cpu_seconds_total", (("worker", "1"),))] == 1.5
    assert text[("bridge_worker_resident_memory_bytes", (("worker", "0"),))] == 100 * 1024


def test_json_snapshot_sums_and_says_who_answered():
    a, b = busy_metrics(3, 1, [2.0]), busy_metrics(2, 0, [4.0])
    snap = json_snapshot(merge([state(a, "1", 0), state(b, "2", 1)]), {"worker": "1", "pid": 9})
    assert snap["calls_started"] == 5 and snap["calls_active"] == 1
    assert snap["uplink"]["n"] == 2 and snap["uplink"]["max_ms"] == 4.0
    assert snap["cpu_s"] == 3.0 and snap["rss_kib"] == 200
    assert [w["pid"] for w in snap["workers"]] == [1000, 1001]
    assert snap["answered_by"] == {"worker": "1", "pid": 9}


def test_retire_keeps_counters_zeroes_gauges_and_fails_live_calls():
    dead = busy_metrics(5, 2, [1.0], leg="phone")
    dead.breaker_open = True
    retired, lost = retire(None, state(dead, "3", 1, RecordCounts(2, 0, 0, 1)))
    assert lost == 2
    m = metrics_from(retired["metrics"])
    assert m.calls_started == 5 and m.calls_active == 0 and m.active_by_leg == {"phone": 0}
    assert m.calls_failed == 2 and m.ended_by_outcome["failed"] == 2
    assert m.ended_by_outcome["completed"] == 3 and not m.breaker_open
    assert retired["records"]["queued"] == 0 and retired["rss_kib"] == 0
    assert retired["cpu_s"] == 1.5 and retired["ids"] == ["3"]
    again, lost = retire(retired, state(busy_metrics(1, 1, []), "5", 1))
    assert lost == 1 and again["ids"] == ["3", "5"]
    assert metrics_from(again["metrics"]).calls_failed == 3


def test_pool_reads_others_and_counts_a_retired_worker_once(tmp_path: Path):
    one = MetricsPool(tmp_path, "1", 0)
    two = MetricsPool(tmp_path, "2", 1)
    two.publish(busy_metrics(4, 1, []), None)
    whole = one.whole(busy_metrics(1, 0, []), None)
    assert metrics_from(whole["metrics"]).calls_started == 5
    assert [w["worker"] for w in whole["workers"]] == ["1", "2"]

    # The supervisor retires worker 2; a reader that still finds its file counts it once.
    kept = (tmp_path / "worker-2.json").read_text()
    assert retire_worker(tmp_path, "2") == 1
    assert not (tmp_path / "worker-2.json").exists()
    (tmp_path / "worker-2.json").write_text(kept)
    whole = one.whole(busy_metrics(1, 0, []), None)
    m = metrics_from(whole["metrics"])
    assert m.calls_started == 5 and m.calls_failed == 1 and m.calls_active == 0
    assert [w["worker"] for w in whole["workers"]] == ["1"]
    assert read_state(tmp_path / RETIRED) is not None
    assert retire_worker(tmp_path, "9") is None  # never wrote: nothing to retire


def test_an_unreadable_file_is_skipped(tmp_path: Path):
    (tmp_path / "worker-4.json").write_text("{half")
    whole = MetricsPool(tmp_path, "1", 0).whole(busy_metrics(2, 0, []), None)
    assert metrics_from(whole["metrics"]).calls_started == 2


def test_uptime_is_the_oldest_workers():
    a, b = Metrics(), Metrics()
    a.started -= 100
    snap = json_snapshot(merge([state(a, "1", 0), state(b, "2", 1)]), {})
    assert snap["uptime_s"] >= 100 and not math.isnan(snap["uptime_s"])


@pytest.mark.parametrize(
    ("text", "count"), [("2", 2), ("1", 1), ("auto", 0), ("AUTO", 0), ("0", 0)]
)
def test_workers_argument(text: str, count: int):
    assert parse_workers(text) == count


@pytest.mark.parametrize("text", ["-1", "two", "", "5000"])
def test_bad_workers_argument(text: str):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_workers(text)


def test_auto_is_one_per_usable_core():
    import os

    assert worker_count(0) == len(os.sched_getaffinity(0)) and worker_count(3) == 3


def test_workers_setting(tmp_path: Path):
    env = tmp_path / "none.env"
    assert Settings.from_env({}, env_file=env).workers == 1
    assert Settings.from_env({"WORKERS": "auto"}, env_file=env).workers == 0
    assert Settings.from_env({"WORKERS": "4"}, env_file=env).workers == 4
