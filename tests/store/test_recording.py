"""Call recordings: a simulated call with barge-ins leaves a stereo WAV whose right channel
is what the simulated caller heard (cleared audio absent) and whose left is what it said;
the file is valid while it is being written; old recordings are purged."""

from __future__ import annotations

import asyncio
import os
import random
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.playout import ClearPlayback, SendAudio
from bridge.sim.caller import simulate_call
from bridge.store.recording import RecordingFiles, recording_path, wait_for_writes
from tests.e2e import best_correlation, rig, run_undisturbed
from tests.test_e2e_call import barge_in_caller

RATE = 8000


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        return frames[:, 0].astype(np.int16), frames[:, 1].astype(np.int16), w.getframerate()


def aligned(reference: np.ndarray, recorded: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """``reference[i]`` against ``recorded[i + lag]``, over the span both cover."""
    start = max(0, -lag)
    end = min(len(reference), len(recorded) - lag)
    return reference[start:end].astype(np.float64), recorded[start + lag : end + lag].astype(
        np.float64
    )


def lag_of(reference: np.ndarray, recorded: np.ndarray) -> int:
    """Where ``reference`` sits in ``recorded``: found from its loudest two seconds."""
    energy = np.convolve(reference.astype(np.float64) ** 2, np.ones(RATE), "valid")
    start = max(int(np.argmax(energy)) - RATE // 2, 0)
    piece = reference[start : start + 2 * RATE]
    score, at = best_correlation(piece, recorded)
    assert score > 0.9, score
    return at - start


def piecewise(reference: np.ndarray, recorded: np.ndarray, lag: int) -> float:
    """Energy-weighted correlation of ``reference``'s 0.2 s pieces with ``recorded``, each
    found within 20 ms of ``lag``: the far end starts each utterance when its first packet
    arrives, a sample or so off the bridge's clock, and one sample is a lot at 8 kHz."""
    piece, slack = RATE // 5, RATE // 50
    weighted = total = 0.0
    for start in range(0, len(reference) - piece + 1, piece):
        part = reference[start : start + piece]
        energy = float(np.sum(part.astype(np.float64) ** 2))
        if energy < piece * 100.0**2:
            continue
        lo = max(start + lag - slack, 0)
        score, _ = best_correlation(part, recorded[lo : start + lag + piece + slack])
        weighted += energy * score
        total += energy
    assert total > 0
    return weighted / total


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def test_the_recording_holds_what_the_caller_heard_and_said(tmp_path: Path) -> None:
    agent = Agent(barge_in_min_ms=400, greeting_guard_ms=0, record=True)
    settings = Settings(agents=(agent,), recordings_dir=str(tmp_path))

    async def main() -> None:
        async with rig(settings) as r:
            result = await simulate_call(
                r.bridge.base_url,
                barge_in_caller(random.Random(5), 2),
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=0.5,
            )
            await asyncio.to_thread(wait_for_writes)
        assert result.violations == [] and result.clears, result.violations

        left, right, rate = read_stereo(recording_path(tmp_path, result.call_sid))
        assert rate == RATE
        # The agent's side, sample-aligned over the whole call, is what the caller heard.
        lag = lag_of(result.heard, right)
        assert piecewise(result.heard, right, lag) > 0.95
        heard, played = aligned(result.heard, right, lag)
        # Audio a barge-in cleared is not in it: right after each clear the recording is
        # as quiet as what the caller heard, while the agent was loud just before.
        for clear in result.clears:
            at = int(clear.t * RATE)
            after = slice(at + int(0.03 * RATE), at + int(0.15 * RATE))
            before = slice(at - int(0.3 * RATE), at)
            assert rms(played[before]) > 300
            assert rms(played[after]) <= rms(heard[after]) + 0.1 * rms(played[before])
        # The caller's side is what it said, on the same timeline.
        assert piecewise(result.sent, left, lag) > 0.95  # on the same timeline

    run_undisturbed(main())


def test_a_recording_is_a_valid_wav_while_it_is_written(tmp_path: Path) -> None:
    files = RecordingFiles(tmp_path, None)
    t0 = time.monotonic()
    recording = files.open("CA/../x", codec="pcm16", rate=RATE, started_at=t0)
    path = recording_path(tmp_path, "CA/../x")
    assert path.parent == tmp_path
    tone = (np.sin(np.arange(160) / 3) * 8000).astype("<i2").tobytes()
    for i in range(150):  # three seconds of caller frames; the agent speaks a while
        now = t0 + (i + 1) * 0.02
        recording.caller(tone, now)
        if i == 50:
            recording.played([SendAudio(tone * 10)], now)
        if i == 55:
            recording.played([ClearPlayback()], now)  # 100 ms in: the rest is not heard
    assert wait_for_writes()
    left, right, _ = read_stereo(path)  # mid-call: what is written so far is readable
    assert len(left) >= 2 * RATE
    agent = np.nonzero(right)[0]
    assert len(agent) and 0.09 * RATE <= agent[-1] - agent[0] <= 0.11 * RATE
    recording.close(t0 + 3.0)
    assert wait_for_writes()
    left, right, _ = read_stereo(path)
    assert 2.9 * RATE <= len(left) <= 3.1 * RATE
    assert rms(left[RATE : 2 * RATE]) > 1000


def caller_side(tmp_path: Path, arrivals: Sequence[tuple[float, int | None]]) -> np.ndarray:
    """The left channel of a recording fed 20 ms frames numbered in turn (frame k holds
    the value k+1), each arriving at its time, with its stream timestamp or none."""
    files = RecordingFiles(tmp_path, None)
    t0 = time.monotonic()
    recording = files.open("CA1", codec="pcm16", rate=RATE, started_at=t0)
    for k, (at, stream_ms) in enumerate(arrivals):
        frame = np.full(160, k + 1, "<i2").tobytes()
        recording.caller(frame, t0 + at, stream_ms)
    recording.close(t0 + arrivals[-1][0] + 0.5)
    assert wait_for_writes()
    left, _, _ = read_stereo(recording_path(tmp_path, "CA1"))
    return left


def test_caller_frames_a_stall_held_back_keep_their_place_on_the_stream_clock(
    tmp_path: Path,
) -> None:
    # 150 frames in real time, but from frame 50 (due at 1.02 s) held up by a stall of
    # the process until 2.2 s, across a write of the file, then read all at once: by the
    # stream's own clock they were never missing.
    arrivals = [(max((k + 1) * 0.02, 2.2 if k >= 50 else 0), k * 20) for k in range(150)]
    left = caller_side(tmp_path / "stall", arrivals)
    starts = [int(np.argmax(left == k + 1)) for k in range(150)]
    assert np.diff(starts).tolist() == [160] * 149  # back to back, no silence put in
    # Without a stream clock (a browser leg) the same lateness reads as the leg going quiet.
    quiet = caller_side(tmp_path / "arrival", [(at, None) for at, _ in arrivals])
    gaps = np.diff([int(np.argmax(quiet == k + 1)) for k in range(150)])
    assert gaps[49] > 160 + RATE
    # Audio the stream itself skipped (timestamps jump 200 ms) leaves 200 ms of silence.
    skipped = [
        ((k + 1) * 0.02 + (0.2 if k >= 25 else 0), k * 20 + (200 if k >= 25 else 0))
        for k in range(50)
    ]
    left = caller_side(tmp_path / "skip", skipped)
    starts = [int(np.argmax(left == k + 1)) for k in range(50)]
    assert starts[25] - starts[24] == 160 + int(0.2 * RATE)
    assert not left[starts[24] + 160 : starts[25]].any()


def test_old_recordings_are_purged(tmp_path: Path) -> None:
    old, new = tmp_path / "old.wav", tmp_path / "new.wav"
    for path in (old, new):
        path.write_bytes(b"RIFF")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    assert RecordingFiles(tmp_path, 3).purge(3) == 1
    assert not old.exists() and new.exists()


def test_recording_is_an_agent_setting_and_the_directory_a_setting(tmp_path: Path) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text("[agents.a]\nrecord = true\n[agents.b]\n", encoding="utf-8")
    settings = Settings.from_env(
        {"AGENTS_FILE": str(agents), "RECORDINGS_DIR": "/var/calls"}, env_file=None
    )
    assert [(a.name, a.record) for a in settings.agents] == [("a", True), ("b", False)]
    assert settings.recordings_dir == "/var/calls"
    assert Settings.from_env({}, env_file=None).recordings_dir == "recordings"
    agents.write_text('[agents.a]\nrecord = "yes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="record must be bool"):
        Settings.from_env({"AGENTS_FILE": str(agents)}, env_file=None)
