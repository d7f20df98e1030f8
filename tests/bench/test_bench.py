"""``bridge bench`` works and reports every figure. Nothing here asserts a speed.

One tiny run (``--quick``: 1 and 2 calls for a few seconds, real processes on loopback)
checks the table, the profile, the PESQ figures and the JSON; the rest are pure checks of
the pieces the figures are made of.
"""

import base64
import cProfile
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.bench import figures, report
from bridge.bench.load import caller_frames, media_text
from bridge.bench.measure import ClientStats, FarEndClock, hist_dump, hist_load
from bridge.bench.profiling import render, summarise
from bridge.metrics import Histogram
from bridge.sim import messages
from tests.test_server import python_prints

ROOT = Path(__file__).resolve().parents[2]
STEP_KEYS = {
    "cpu",
    "latency_ms",
    "barge_in",
    "uplink_jitter_ms",
    "loop_lag_ms",
    "memory",
    "frames",
    "errors",
    "abnormal",
    "generator",
    "other_processes_cpu_load",
    "clean",
    "verdict",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_prints_every_figure(quick_run: tuple[str, dict[str, Any]]) -> None:
    stdout, _ = quick_run
    for heading in (
        "Load and cost",
        "Latency added by the server",
        "Audio quality",
        "Targets",
        "Where the bridge's CPU goes",
        "own time by area",
    ):
        assert heading in stdout
    for column in (
        "CPU ms per call-s",
        "calls/core",
        "RSS KiB/call",
        "x relay",
        "late frames up/down",
        "errors",
        "abnormal ends",
        "uplink p50/p99/max",
        "downlink p50/p99/max",
        "trigger→clear p50/p99",
        "naive per-chunk",
    ):
        assert column in stdout
    assert "bridge" in stdout and "relay" in stdout


def test_quick_run_writes_every_figure_as_json(quick_run: tuple[str, dict[str, Any]]) -> None:
    _, result = quick_run
    assert next(row["calls"] for row in result["steps"]) == 1
    for row in result["steps"]:
        for kind in ("bridge", "relay"):
            step = row[kind]
            assert set(step) >= STEP_KEYS, STEP_KEYS - set(step)
            assert step["streaming"] == row["calls"]
            assert step["cpu"]["server_s"] > 0
            assert step["memory"]["rss_kib"] > 0
            assert step["frames"]["frames_read"] > 0
            for direction in ("uplink", "downlink"):
                assert {"p50_ms", "p99_ms", "max_ms"} <= set(step["latency_ms"][direction])
            assert {"p50_ms", "p99_ms"} <= set(step["barge_in"]["trigger_to_clear_ms"])
        assert {"cpu_per_call", "memory_per_call", "uplink_p99", "downlink_p99"} <= set(
            row["ratio"]
        )
    # The ramp runs the quick steps in order and stops at the first one that is not clean;
    # the summary's highest clean step and the profiled load follow from the rows.
    # (Clean or not depends on the machine's speed, which is not asserted.)
    calls = [row["calls"] for row in result["steps"]]
    clean = [row["bridge"]["clean"] for row in result["steps"]]
    summary = result["summary"]
    assert calls == result["config"]["steps"][: len(calls)] and all(clean[:-1])
    if clean[-1]:
        assert calls == [1, 2]
        assert summary["sustained_calls"] == 2 and summary["first_failing_step"] is None
    else:
        assert summary["sustained_calls"] == (calls[-2] if len(calls) > 1 else 0)
        assert summary["first_failing_step"]["calls"] == calls[-1]
    assert result["profile"]["calls"] == (summary["sustained_calls"] or 1)
    assert result["profile"]["by_area"] and result["profile"]["top_tottime"]
    for direction in ("uplink", "downlink"):
        assert 1.0 <= result["quality"][direction]["streamed"] <= 4.7
        assert 1.0 <= result["quality"][direction]["naive"] <= 4.7
    assert {t["target"] for t in result["targets"]} >= {
        "<= 200 KiB RSS per live call",
        "CPU per call within 1.5x of the minimal relay",
    }
    assert result["machine"]["python"]


# --------------------------------------------------------------------------- pieces


def test_fast_media_text_is_what_the_simulator_sends() -> None:
    payload = bytes(range(160))
    b64 = base64.b64encode(payload).decode()
    expected = messages.media(7, stream_sid="MZ1", chunk=3, timestamp_ms=40, payload=payload)
    assert media_text(7, "MZ1", 3, 40, b64) == expected


def test_caller_frames_are_twenty_ms() -> None:
    wav = ROOT / "fixtures" / "caller-hello.wav"
    assert {len(base64.b64decode(f)) for f in caller_frames(wav)} == {160}
    assert {len(base64.b64decode(f)) for f in caller_frames(wav, codec="pcm24")} == {960}


def test_far_end_counts_a_gap_inside_an_item_only() -> None:
    far, stats = FarEndClock(), ClientStats()
    far.media(320, 0.0)  # 40 ms of item A
    far.mark("1:A", stats)
    far.media(320, 0.030)  # in time: 10 ms left, no gap
    far.mark("2:A", stats)
    far.media(320, 0.150)  # the far end ran dry at 0.070: 80 ms of silence inside A
    far.mark("3:A", stats)
    far.media(320, 1.0)  # a new item after a pause is not a gap
    far.mark("4:B", stats)
    assert (stats.underruns, stats.late_frames) == (1, 4)
    assert stats.headroom.n == 2  # the two mid-item arrivals
    assert far.due_marks(0.05) == ["1:A"]
    assert far.clear(1.0) == ["2:A", "3:A", "4:B"]


def test_far_end_ignores_chunks_of_one_burst_for_headroom() -> None:
    far, stats = FarEndClock(), ClientStats()
    for seq in range(1, 5):  # 160 ms sent at once
        far.media(320, 0.0)
        far.mark(f"{seq}:A", stats)
    assert stats.headroom.n == 0 and stats.underruns == 0


def test_histograms_survive_the_trip_between_processes() -> None:
    h = Histogram()
    for ms in (0.1, 1.0, 10.0):
        h.add(ms)
    back = hist_load(json.loads(json.dumps(hist_dump(h))))
    assert back.summary() == h.summary()


def _stats(cpu: float, t: float, **probe: Any) -> dict[str, Any]:
    hist = Histogram().summary()
    metrics = {
        "cpu_s": cpu,
        "rss_kib": 70_000,
        "uplink": hist,
        "downlink": hist,
        "clear": hist,
        "calls_failed": 0,
        "model_errors": 0,
        "frames_dropped": 0,
        "frames_in": 0,
    }
    return {
        "metrics": metrics,
        "monotonic": t,
        "uplink_late": probe.get("late", 0),
        "uplink_jitter": hist,
        "loop_lag": hist,
        "gc_pause": hist,
        "gc_collections": [0, 0, 0],
    }


def test_step_figures_and_verdict() -> None:
    result = {
        "stats": ClientStats(late_frames=3, underruns=1).dump(),
        "setup_failed": 0,
        "closed_by_server": 0,
    }
    step = figures.step(
        "bridge",
        10,
        _stats(1.0, 0.0),
        _stats(3.0, 20.0),
        [{"streaming": 10}],
        [result],
        side_cpu_s=4.0,
        rss_base_kib=60_000,
    )
    assert step["cpu"]["ms_per_call_s"] == pytest.approx(10.0)
    assert step["cpu"]["calls_per_core"] == pytest.approx(100.0)
    assert step["memory"]["per_call_kib"] == pytest.approx(1000.0)
    assert not step["clean"] and "3 down" in step["verdict"]
    assert step["generator"]["cpu_load_agent_and_callers"] == pytest.approx(0.2)


def test_report_renders_missing_figures_and_writes_strict_json() -> None:
    assert report.jsonable({"a": [math.nan, math.inf, 1.5]}) == {"a": [None, None, 1.5]}
    assert report._pmm({"n": 0}) == "-"


def test_profile_summary_has_areas_and_top_functions() -> None:
    profile = cProfile.Profile()
    profile.enable()
    sorted(str(i) for i in range(20000))
    profile.disable()
    summary = summarise(profile)
    assert summary["by_area"] and summary["top_tottime"]
    assert "own time by area" in render(summary)


_PIN = """
import json, os
import numpy  # BLAS starts its threads at import, before anything is pinned
from threadpoolctl import threadpool_info
from bridge.bench.server import pin
threads = os.listdir("/proc/self/task")
pin(0)
print(json.dumps({
    "threads": len(threads),
    "cpus": [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")],
    "blas": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
}))
"""


def test_pin_puts_every_thread_on_the_cpu() -> None:
    """A pinned bench process runs wholly on its CPU: BLAS's threads, started at import,
    too (they used to run on the load generator's core, their CPU counted to the server)."""
    figures = python_prints(_PIN, OPENBLAS_NUM_THREADS="2")
    assert figures["threads"] > 1, figures  # BLAS's threads exist, so the test can fail
    assert figures["cpus"] == [[0]] * len(figures["cpus"]), figures
    assert figures["blas"] == [1] * len(figures["blas"]), figures


@pytest.mark.parametrize(
    ("relay_per_core", "relay_load", "says_no_server_can"),
    [
        (165.0, 0.61, True),  # the relay already at 61% of its core: the machine's bound
        (165.0, 0.3, False),  # at 30%, fixed costs could still shrink per call
        (406.0, 0.62, False),
    ],
)
def test_the_200_call_target_names_what_the_relay_carries(
    relay_per_core: float, relay_load: float, says_no_server_can: bool
) -> None:
    def server(per_core: float, load: float) -> dict[str, Any]:
        return {
            "clean": True,
            "cpu": {"calls_per_core": per_core, "core_load": load},
            "memory": {"per_call_kib": 150},
            "generator": {"saturated": False},
            "load_saturated": False,
            "verdict": "clean",
        }

    low: dict[str, Any] = {
        "calls": 50,
        "bridge": server(100.0, 0.5),
        "relay": server(relay_per_core, 0.1),
    }
    row: dict[str, Any] = {
        "calls": 150,
        "bridge": server(117.0, 0.85),
        "relay": server(relay_per_core, relay_load),
    }
    out = {"steps": [low, row], "summary": figures.summary([low, row])}
    target = figures.targets(out)[0]
    assert target["target"].startswith(">= 200 concurrent calls") and target["met"] is False
    assert "150 calls clean (largest clean step); ~117.0 calls/core by CPU" in target["measured"]
    assert (
        f"the minimal relay ~{relay_per_core} calls/core by CPU at 150 calls"
        in (target["measured"])
    )
    assert ("no server can show 200 calls" in target["measured"]) is says_no_server_can

    # No clean step: said as such; the relay's figure is still the machine's.
    row["bridge"]["clean"] = low["bridge"]["clean"] = False
    out["summary"] = figures.summary([low, row])
    measured = figures.targets(out)[0]["measured"]
    assert measured.startswith("no step clean;") and "None" not in measured
    assert ("no server can show 200 calls" in measured) is says_no_server_can

    del row["relay"], low["relay"]
    assert "relay" not in figures.targets(out)[0]["measured"]
