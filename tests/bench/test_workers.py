"""``bridge bench --workers N``: the bridge under test as N worker processes.

One tiny run (``--quick --workers 2``: 1 and 2 calls for a few seconds, real processes on
loopback) checks that every figure is there, summed over both workers; the rest are pure
checks of how the workers' answers are merged and how calls per box is reported. Nothing
here asserts a speed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.bench import figures
from bridge.bench import workers as pool
from bridge.bench.main import parse_args
from bridge.bench.probe import Probe
from bridge.metrics import Histogram, Metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--quick", "--workers", "2", "--no-quality", "--no-baseline", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "bench", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_with_two_workers_sums_both(quick_run: tuple[str, dict[str, Any]]) -> None:
    stdout, result = quick_run
    assert "2 worker processes" in stdout and "2 workers not pinned" in stdout
    assert result["config"]["workers"] == 2
    assert result["summary"]["workers"] == 2
    assert result["summary"]["calls_per_box"] == result["summary"]["sustained_calls"]
    assert next(row["calls"] for row in result["steps"]) == 1
    for row in result["steps"]:
        step = row["bridge"]
        assert step["streaming"] == row["calls"]
        assert step["cpu"]["server_s"] > 0 and step["cpu"]["ms_per_call_s"] > 0
        assert step["memory"]["rss_kib"] > 0 and step["frames"]["frames_read"] > 0
        assert step["latency_ms"]["uplink"]["p99_ms"] is not None
        per_worker = step["workers"]
        assert len({w["pid"] for w in per_worker}) == 2
        # The step's CPU is both workers' (each keeps its event loop and probe ticking).
        assert all(w["cpu_s"] > 0 for w in per_worker)
        assert step["cpu"]["server_s"] == pytest.approx(
            sum(w["cpu_s"] for w in per_worker), abs=0.003
        )
        assert sum(w["calls_active"] for w in per_worker) == row["calls"]
        assert sum(w["frames_read"] for w in per_worker) == step["frames"]["frames_read"]
    assert result["profile"]["workers_profiled"] == 2
    assert result["profile"]["by_area"]


def test_workers_one_and_two_print_calls_per_box(
    quick_run: tuple[str, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--workers 1,2`` runs the whole bench per count (stood in for by the quick run's
    result) and reports both, then the table."""
    _, two = quick_run
    one = copy.deepcopy(two)
    one["config"]["workers"] = 1
    ran: list[int] = []

    class Stand:
        def __init__(self, args: Any) -> None:
            ran.append(args.workers)
            self.result = one if args.workers == 1 else two

        def run(self) -> dict[str, Any]:
            return self.result

        def close(self) -> None:
            pass

    args = parse_args(["--quick", "--workers", "1,2", "--json", str(tmp_path / "b.json")])
    assert pool.run_counts(args, Stand) == 0
    assert ran == [1, 2]
    stdout = capsys.readouterr().out
    assert "Calls per box" in stdout and "=== the bridge as 2 worker(s)" in stdout
    written = json.loads((tmp_path / "b.json").read_text())
    assert [r["workers"] for r in written["calls_per_box"]["rows"]] == [1, 2]
    assert [r["config"]["workers"] for r in written["runs"]] == [1, 2]


# --------------------------------------------------------------------------- pieces


def _hist(*ms: float) -> dict[str, Any]:
    h = Histogram()
    for value in ms:
        h.add(value)
    return {"counts": h.counts, "n": h.n, "total": h.total, "max": h.max}


def _answer(pid: int, cpu: float, late: float, t: float, calls: int) -> dict[str, Any]:
    raw = {name: _hist() for name in ("loop_lag", "gc_pause", "downlink", "clear", "response")}
    raw["uplink"] = _hist(0.5)
    raw["uplink_jitter"] = _hist(late)
    metrics = Metrics().snapshot()
    metrics.update(cpu_s=cpu, rss_kib=1000, calls_active=calls, frames_in=10 * calls)
    metrics.update(uptime_s=t)
    return {
        "metrics": metrics,
        "uplink_jitter": {},
        "uplink_late": 1 if late > 40 else 0,
        "loop_lag": {},
        "gc_pause": {},
        "gc_collections": [1, 0, 0],
        "media_sockets": calls,
        "monotonic": t,
        "pid": pid,
        "raw": raw,
    }


def test_merge_sums_counters_and_merges_histograms() -> None:
    merged = pool.merge_stats([_answer(20, 2.0, 100.0, 5.0, 3), _answer(10, 1.0, 1.0, 6.0, 1)])
    m = merged["metrics"]
    assert (m["cpu_s"], m["rss_kib"], m["calls_active"], m["frames_in"]) == (3.0, 2000, 4, 40)
    assert m["uptime_s"] == 6.0 and merged["monotonic"] == 6.0
    assert m["uplink"]["n"] == 2 and merged["uplink_jitter"]["n"] == 2
    assert merged["uplink_jitter"]["max_ms"] == pytest.approx(100.0)  # worker 20's late frame
    assert merged["uplink_late"] == 1 and merged["gc_collections"] == [2, 0, 0]
    assert [w["pid"] for w in merged["workers"]] == [10, 20]
    assert m["cpu_s"] >= max(w["cpu_s"] for w in merged["workers"])


def test_worker_deltas_are_each_workers_share_of_the_window() -> None:
    start = pool.merge_stats([_answer(1, 1.0, 0.0, 0.0, 0), _answer(2, 2.0, 0.0, 0.0, 0)])
    end = pool.merge_stats([_answer(1, 1.5, 0.0, 3.0, 2), _answer(3, 0.25, 0.0, 3.0, 1)])
    deltas = figures.worker_deltas(start, end)
    # pid 3 replaced pid 2 during the window: all of its CPU is in it.
    assert deltas == [
        {"pid": 1, "cpu_s": 0.5, "frames_read": 20, "calls_active": 2},
        {"pid": 3, "cpu_s": 0.25, "frames_read": 10, "calls_active": 1},
    ]


def test_gather_asks_until_every_worker_answered() -> None:
    pids = iter([7, 7, 7, 9, 7])
    assert [a["pid"] for a in pool.gather(lambda: {"pid": next(pids)}, 2)] == [7, 9]
    with pytest.raises(RuntimeError, match="1 of 2 workers"):
        pool.gather(lambda: {"pid": 7}, 2)


def _result(workers: int, clean: list[int], failing: int | None, ms: float) -> dict[str, Any]:
    steps = [{"calls": n, "bridge": {"clean": True, "cpu": {"ms_per_call_s": ms}}} for n in clean]
    if failing is not None:
        steps.append({"calls": failing, "bridge": {"clean": False, "cpu": {"ms_per_call_s": ms}}})
    first = {"calls": failing} if failing is not None else None
    return {
        "config": {"workers": workers},
        "machine": {"cpus": 2},
        "steps": steps,
        "summary": {"sustained_calls": clean[-1], "first_failing_step": first},
    }


def test_per_box_compares_cpu_at_the_largest_common_clean_step() -> None:
    box = pool.per_box([_result(1, [1, 10, 50], 100, 4.0), _result(2, [1, 10, 50, 100], None, 5.0)])
    assert box["common_step"] == 50
    one, two = box["rows"]
    assert (one["calls_per_box"], two["calls_per_box"]) == (50, 100)
    assert (one["first_failing_step"], two["first_failing_step"]) == (100, None)
    assert (one["x_first"], two["x_first"]) == (1.0, 1.25)
    assert (one["calls_per_core"], two["calls_per_core"]) == (250.0, 200.0)
    assert (one["shares_cores"], two["shares_cores"]) == (False, True)  # 2 cores, 2 + 1
    for text in (pool.render_per_box(box), pool.render_per_box(box, markdown=True)):
        assert "at 50 calls" in text and "load generator shares the cores (2 cores)" in text
    failed = _result(2, [1], None, 5.0)
    failed["steps"][0]["bridge"]["clean"] = False
    box = pool.per_box([_result(1, [1], None, 4.0), failed])
    assert box["common_step"] is None and math.isnan(box["rows"][0]["cpu_ms_per_call_s"])


def test_workers_option_takes_a_count_or_a_list() -> None:
    assert (parse_args([]).workers, parse_args([]).worker_counts) == (1, [1])
    args = parse_args(["--workers", "1,2"])
    assert (args.workers, args.worker_counts) == (1, [1, 2])
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


def test_server_command_runs_n_workers_unpinned() -> None:
    assert pool.server_command("bridge", 1, (0, 1)) == ("bridge.bench.server", ["--cpu", "0"])
    assert pool.server_command("bridge", 2, (0, 1)) == ("bridge.bench.pool", ["--workers", "2"])
    assert pool.server_command("relay", 2, (0, 1)) == ("bridge.bench.server", ["--cpu", "0"])


def _control(probe: Probe, method: str, path: str) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path}
    asyncio.run(probe(scope, receive, send))
    assert sent[0]["status"] == 200
    body: dict[str, Any] = json.loads(sent[1]["body"])
    return body


def test_a_workers_probe_names_itself_and_stops_profiling_once() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the probe answers /bench/* itself")

    worker_probe = Probe(app, Metrics(), worker=True)
    stats = _control(worker_probe, "GET", "/bench/stats")
    assert stats["pid"] > 0 and set(stats["raw"]) >= {"uplink", "uplink_jitter", "loop_lag"}
    assert _control(worker_probe, "POST", "/bench/profile/start")["profiling"]
    assert _control(worker_probe, "POST", "/bench/profile/start")["profiling"]  # asked twice
    assert "by_area" in _control(worker_probe, "POST", "/bench/profile/stop")
    assert _control(worker_probe, "POST", "/bench/profile/stop") == {
        "profiling": False,
        "pid": stats["pid"],
    }
