"""``bridge bench --core``: the simulated call moves every byte it should, in every mode.

Nothing here asserts a speed: a run that moved no audio would measure nothing, so the
traffic is what is checked.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.audio.formats import ModelAudio
from bridge.bench import core

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", core.MODES)
def test_a_simulated_call_carries_both_directions_whole(mode: ModelAudio) -> None:
    result = core.measure(mode, 20, 1)
    t = result.traffic
    assert t.frames_in == 20 * 50
    # Caller audio in 60 ms appends: all of it but the last, partial batch.
    assert t.appends == 20 * 1000 // 60
    model_bytes_per_ms = 48 if mode == "pcm16" else 8
    assert t.appends * 60 * model_bytes_per_ms - t.append_bytes <= 0.01 * t.append_bytes
    # Every millisecond the agent said was played to the caller (μ-law, 8 bytes a ms), in
    # chunks of half the lead, each with its mark.
    assert t.media_bytes == 2 * core.AGENT_S * 1000 * 8
    assert t.media_out == t.marks >= t.media_bytes // (core.LEAD_MS // 2 * 8)
    assert len(result.us_per_call_s) == 1 and result.best > 0


def test_the_command_prints_and_writes_figures(tmp_path: Path) -> None:
    out = tmp_path / "core.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "bench",
            "--core",
            "--seconds",
            "10",
            "--runs",
            "2",
            "--modes",
            "pcmu,pcm16",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    assert "Call core" in run.stdout
    rows = json.loads(out.read_text())
    assert [r["mode"] for r in rows] == ["pcm16", "pcmu"]
    for row in rows:
        assert len(row["us_per_call_s"]) == 2
        assert 0 < row["min_us"] <= row["median_us"]
        assert row["traffic"]["frames_in"] == 500


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        core.main(["--seconds", "15"])
    with pytest.raises(SystemExit):
        core.main(["--modes", "opus"])
    with pytest.raises(SystemExit):
        core.main(["--runs", "0"])
