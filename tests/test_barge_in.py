"""The local barge-in detector: fires on real speech, not on clicks, noise or echo."""

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.barge_in import LocalBargeIn, level_dbfs

FIXTURES = Path(__file__).parent.parent / "fixtures"
FRAME = 480  # 20 ms at 24 kHz


def speech_24k() -> np.ndarray:
    with wave.open(str(FIXTURES / "speech-24k.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def noise(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(24000 * seconds)) * 32768 * 10 ** (dbfs / 20)
    return x.astype(np.int16)


def run(detector: LocalBargeIn, caller: np.ndarray, *, agent_db: float | None) -> float | None:
    """Feed 20 ms frames; the agent plays throughout at ``agent_db``. Time of firing, or None."""
    for i in range(0, caller.size - FRAME + 1, FRAME):
        now = i / 24000
        if agent_db is not None:
            detector.agent_audio(agent_db, now)
        if detector.feed(caller[i : i + FRAME].tobytes(), playing=agent_db is not None, now=now):
            return now
    return None


def first_speech_at(x: np.ndarray) -> float:
    for i in range(0, x.size, FRAME):
        if level_dbfs(x[i : i + FRAME]) > -40:
            return i / 24000
    raise AssertionError("no speech")


def test_fires_after_min_speech_over_the_agent():
    speech = speech_24k()
    caller = np.concatenate([noise(1.0, -60), speech[: 24000 * 2]])
    onset = first_speech_at(caller)
    # The caller speaks about as loud as the agent plays.
    fired = run(LocalBargeIn(min_speech_ms=200), caller, agent_db=level_dbfs(speech))
    assert fired is not None
    assert 0.18 <= fired - onset <= 0.5, fired - onset


def test_does_not_fire_when_the_agent_is_silent():
    caller = np.concatenate([noise(1.0, -60), speech_24k()[: 24000 * 2]])
    assert run(LocalBargeIn(), caller, agent_db=None) is None


@pytest.mark.parametrize("click_ms", [10, 40, 100])
def test_short_clicks_do_not_interrupt(click_ms: int):
    caller = noise(2.0, -60)
    n = 24 * click_ms
    caller[24000 : 24000 + n] = (np.sign(np.sin(np.arange(n) / 3)) * 20000).astype(np.int16)
    assert run(LocalBargeIn(min_speech_ms=200), caller, agent_db=-20.0) is None


@pytest.mark.parametrize("dbfs", [-55.0, -45.0, -35.0])
def test_steady_line_noise_does_not_interrupt(dbfs: float):
    # Even loud-ish hiss: the adaptive floor learns it in the first frames.
    assert run(LocalBargeIn(), noise(3.0, dbfs), agent_db=-20.0) is None


def test_echo_of_the_agent_does_not_interrupt():
    # The agent's own speech coming back 15 dB down (a typical line echo) while it plays.
    speech = speech_24k()[: 24000 * 3]
    echo = (speech.astype(np.float32) * 10 ** (-15 / 20)).astype(np.int16)
    agent_level = level_dbfs(speech)
    assert run(LocalBargeIn(), echo, agent_db=agent_level) is None
    # …but the same speech at full level is the caller talking over the agent.
    assert run(LocalBargeIn(), speech, agent_db=agent_level) is not None


def test_fires_once_per_run_of_speech():
    detector = LocalBargeIn(min_speech_ms=100)
    speech = speech_24k()[: 24000 * 2]
    fired = 0
    for i in range(0, speech.size - FRAME + 1, FRAME):
        detector.agent_audio(-20.0, i / 24000)
        fired += detector.feed(speech[i : i + FRAME].tobytes(), playing=True, now=i / 24000)
    assert fired >= 1
    assert fired <= 4  # one per word-group, not one per frame


def test_odd_chunk_sizes_are_buffered():
    detector = LocalBargeIn(min_speech_ms=100)
    speech = speech_24k()[24000 : 24000 * 2]
    fired = False
    pos = 0
    rng = np.random.default_rng(3)
    while pos < speech.size:
        n = int(rng.integers(1, 1500))
        detector.agent_audio(-30.0, pos / 24000)
        fired |= detector.feed(speech[pos : pos + n].tobytes(), playing=True, now=pos / 24000)
        pos += n
    assert fired
