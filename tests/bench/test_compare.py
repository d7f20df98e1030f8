"""``bridge bench --compare``, the load generator's saturation flag, and a run without pesq.

One tiny run (``--compare --quick``: four servers at 1 and 2 calls, real processes on
loopback) checks the comparison rows, the JSON and the Markdown; the rest are pure checks.
Nothing here asserts a speed.
"""

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.bench import compare, figures, main, procs, quality, report
from bridge.bench.measure import ClientStats
from tests.bench.test_bench import _stats

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {
    "server",
    "calls",
    "cpu_ms_per_call_s",
    "x_relay",
    "calls_per_core",
    "rss_kib_per_call",
    "uplink_p99_ms",
    "downlink_p99_ms",
    "trigger_to_clear_p99_ms",
    "pesq",
    "pesq_vs_pcm",
    "late_frames",
    "load_saturated",
    "model_errors_since_start",
    "clean",
    "verdict",
}


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    # No rerun of a step on a busy machine: this checks the harness, not speed.
    args = ["--compare", "--quick", "--no-profile", "--retries=0", f"--json={out / 'bench.json'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "bench", *args, "--markdown", str(out / "bench.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    return proc.stdout, result, (out / "bench.md").read_text()


SERVERS = ["bridge", "bridge-pcmu", "bridge-pcmu-in", "relay"]


def test_compare_measures_four_servers_at_every_step(compare_run) -> None:
    _, result, _ = compare_run
    section = result["compare"]
    assert list(section["servers"]) == SERVERS
    for step in result["steps"]:
        rows = [r for r in section["rows"] if r["calls"] == step["calls"]]
        assert [r["server"] for r in rows] == SERVERS
        for r in rows:
            assert set(r) == ROW_KEYS
            assert isinstance(r["load_saturated"], bool)
        by = {r["server"]: r for r in rows}
        for server in ("bridge", "relay"):
            r = by[server]
            for key in ("cpu_ms_per_call_s", "x_relay", "calls_per_core", "rss_kib_per_call"):
                assert r[key] is not None, (server, key)
            assert r["cpu_ms_per_call_s"] > 0 and r["uplink_p99_ms"] is not None
            assert r["late_frames"]["uplink"] is not None
        assert by["relay"]["x_relay"] == 1.0 and by["relay"]["pesq"] is None
        assert by["bridge"]["x_relay"] == pytest.approx(
            by["bridge"]["cpu_ms_per_call_s"] / by["relay"]["cpu_ms_per_call_s"], abs=0.01
        )
        # Transcoding: the streamed figures; pass-through: μ-law itself against PCM; μ-law
        # in: the pass-through's uplink and the transcoding downlink.
        streamed = {d: result["quality"][d]["streamed"] for d in ("uplink", "downlink")}
        assert by["bridge"]["pesq"] == streamed
        pcm = result["quality"]["against_pcm"]
        assert by["bridge-pcmu"]["pesq"] == pcm["passthrough"]
        assert by["bridge-pcmu-in"]["pesq"] == {
            "uplink": pcm["passthrough"]["uplink"],
            "downlink": streamed["downlink"],
        }
        assert by["bridge-pcmu-in"]["pesq_vs_pcm"] == {
            "uplink": pcm["passthrough"]["uplink"],
            "downlink": pcm["transcoding"]["downlink"],
        }
        for server in ("bridge", "bridge-pcmu", "bridge-pcmu-in"):
            for figure in ("pesq", "pesq_vs_pcm"):
                assert all(1.0 <= v <= 4.7 for v in by[server][figure].values())
    assert result["config"]["compare"] and result["config"]["baseline"]


def test_compare_every_step_has_the_saturation_flag(compare_run) -> None:
    _, result, _ = compare_run
    for row in result["steps"]:
        for server in SERVERS:
            step = row[server]
            assert isinstance(step["load_saturated"], bool)
            assert step["generator"]["cores"] >= 1
    assert "load_saturated_at" in result["summary"]


def test_compare_is_printed_and_written_as_markdown(compare_run) -> None:
    stdout, _, markdown = compare_run
    for text in (stdout, markdown):
        assert "Measured: " in text
        assert "PESQ vs PCM up/down" in text and "trigger→clear p99" in text
        assert "bridge-pcmu" in text and "bridge-pcmu-in" in text
    assert "| server | calls | CPU ms per call-s | x relay | calls/core |" in markdown


def test_without_pesq_the_quality_rows_are_one_line(compare_run, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pesq", None)  # import pesq: ModuleNotFoundError
    assert not quality.pesq_available()
    part = main.quality_part(compare=True)
    assert part == {"quality_skipped": "PESQ rows skipped: pip install 'phone-bridge[bench]'"}

    _, measured, _ = compare_run
    result = {k: v for k, v in measured.items() if k not in ("quality", "compare", "targets")}
    result.update(part)
    result["targets"] = figures.targets(result)
    result["compare"] = compare.build(result)
    text, markdown = report.render_text(result), report.render_markdown(result)
    for out in (text, markdown):
        assert out.count(quality.SKIPPED) == 1
        assert "PESQ-NB" not in out and "naive per-chunk" not in out
        assert "CPU ms per call-s" in out and "uplink p50/p99/max" in out
    assert "Load and cost" in text and "Targets" in text
    for r in result["compare"]["rows"]:
        assert r["pesq"] is None and r["pesq_vs_pcm"] is None
        assert r["cpu_ms_per_call_s"] > 0
    json.dumps(report.jsonable(result), allow_nan=False)


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("side_cpu_s", "window_s", "cores", "saturated"),
    [
        (18.0, 20.0, 1, True),  # 90% of one core
        (17.9, 20.0, 1, False),
        (18.0, 20.0, 2, False),  # 45% of two cores
        (36.0, 20.0, 2, True),
        (5.0, 0.0, 1, False),
        (math.nan, 20.0, 1, False),
    ],
)
def test_load_saturated_is_the_busy_share_of_the_load_cores(
    side_cpu_s: float, window_s: float, cores: int, saturated: bool
) -> None:
    assert figures.load_saturated(side_cpu_s, window_s, cores) is saturated


def _step(load_cores: int) -> dict[str, Any]:
    """10 calls for 20 s while the agent + callers used 19 CPU seconds."""
    result = {"stats": ClientStats().dump(), "setup_failed": 0, "closed_by_server": 0}
    return figures.step(
        "bridge",
        10,
        _stats(1.0, 0.0),
        _stats(3.0, 20.0),
        [{"streaming": 10}],
        [result],
        side_cpu_s=19.0,
        rss_base_kib=60_000,
        load_cores=load_cores,
    )


def test_a_saturated_step_says_so_in_json_console_and_table() -> None:
    step = _step(load_cores=1)
    assert step["load_saturated"] and step["generator"]["busy_share"] == pytest.approx(0.95)
    assert "bounded by the load generator" in report.progress_line(step)
    assert "bounded by the load generator" in report._cost_cells({"calls": 10}, step, {})[-1]
    spread = _step(load_cores=2)
    assert not spread["load_saturated"] and "bounded" not in spread["verdict"]
    rows = [{"calls": 10, "bridge": step}]
    assert figures.summary(rows)["load_saturated_at"] == 10
    header = report.measured_line(
        {"config": {"load_cpus": [1], "load_processes": 1}, "summary": figures.summary(rows)}
    )
    assert "From 10 calls the load generator saturated" in header
    assert "extrapolated from CPU per call-second" in header
    # With --compare, a step is bounded when the generator saturated against any server.
    compared = [{"calls": 10, "bridge": spread, "relay": step, "cpu_x_relay": {"bridge": 1.5}}]
    assert figures.summary(compared)["load_saturated_at"] == 10
    assert figures.summary([{"calls": 10, "bridge": spread}])["load_saturated_at"] is None


def test_load_processes_spread_over_the_cpus_but_the_servers() -> None:
    assert procs.split_calls(5, 2) == [3, 2]
    assert procs.split_calls(1, 4) == [1]
    assert procs.load_cores([1], 4) == 1  # 2-core machine: everything on CPU 1
    assert [procs.load_cpu([1, 2, 3], i) for i in range(4)] == [2, 3, 1, 2]
    assert procs.load_cores([1, 2, 3], 1) == 2 and procs.load_cores([1, 2, 3], 2) == 3
    assert procs.load_cpu([], 0) is None


def test_a_compare_row_shows_a_model_refusing_sessions() -> None:
    step, relay = _step(load_cores=2), _step(load_cores=2)
    step["model_errors_since_start"] = 3  # e.g. an agent that does not take audio/pcmu yet
    relay["cpu"]["ms_per_call_s"] = step["cpu"]["ms_per_call_s"] / 2
    r = compare.row("bridge-pcmu", step, figures.cpu_ratio([step], [relay]), None)
    assert r["x_relay"] == 2.0 and r["pesq"] is None and r["load_saturated"] is False
    assert report._compare_cells(r)[-1] == "clean (3 model errors since start)"


def test_repeated_runs_give_the_median_run_and_the_median_of_paired_ratios() -> None:
    def run(cpu: float, clean: bool = True) -> dict[str, Any]:
        s = _step(load_cores=2)
        s["cpu"]["ms_per_call_s"], s["clean"] = cpu, clean
        s["verdict"] = "clean" if clean else "late frames: 3 up, 0 down"
        return s

    # The host slowed down in the middle: both servers' second runs are dearer.
    bridges = [run(5.0), run(9.0), run(5.2)]
    relays = [run(2.5), run(4.4), run(2.6)]
    assert figures.median_run(bridges)["cpu"]["ms_per_call_s"] == 5.2
    assert figures.median_run(bridges)["runs"]["ms_per_call_s"] == [5.0, 9.0, 5.2]
    assert figures.cpu_ratio(bridges, relays) == 2.0  # pairs: 2.0, 2.05, 2.0
    row: dict[str, Any] = {
        "calls": 10,
        "bridge": figures.median_run(bridges),
        "relay": figures.median_run(relays),
    }
    figures.add_ratios(row, {"bridge": bridges, "relay": relays})
    assert row["ratio"]["cpu_per_call"] == row["cpu_x_relay"]["bridge"] == 2.0
    # A step is clean when most runs were; the even count takes the lower middle run.
    mixed = figures.median_run([run(5.0), run(6.0, clean=False)])
    assert mixed["cpu"]["ms_per_call_s"] == 5.0 and not mixed["clean"]
    assert mixed["verdict"] == "NOT clean (1 of 2 runs: late frames: 3 up, 0 down)"
    assert "5.00 (5.00-6.00)" in report._cost_cells({"calls": 10}, mixed, {})[3]
    hiccup = figures.median_run([run(5.0), run(5.5, clean=False), run(6.0)])
    assert hiccup["clean"] and hiccup["cpu"]["ms_per_call_s"] == 5.5
    assert hiccup["verdict"] == "clean (1 of 3 runs: late frames: 3 up, 0 down)"
    assert report._cost_cells({"calls": 10}, hiccup, {})[-1] == hiccup["verdict"]
    assert figures.median_run([bridges[0]]) is bridges[0]  # one run: as it was
