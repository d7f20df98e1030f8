"""The simulator's own WAV reader: the same rules as the bridge's, without its code."""

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import wav as bridge_wav
from bridge.sim import wav as sim_wav

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_reads_what_the_bridge_reads() -> None:
    pcm, rate = sim_wav.read_wav(FIXTURES / "caller-barge-in.wav")
    expected, expected_rate = bridge_wav.read_wav(FIXTURES / "caller-barge-in.wav")
    assert rate == expected_rate == 8000
    assert pcm.dtype == np.int16 and np.array_equal(pcm, expected)


def test_round_trip(tmp_path: Path) -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    sim_wav.write_wav(tmp_path / "x.wav", pcm)
    back, rate = sim_wav.read_wav(tmp_path / "x.wav")
    assert rate == 8000 and np.array_equal(back, pcm)


@pytest.mark.parametrize("reader", [sim_wav.read_wav, bridge_wav.read_wav])
def test_both_readers_refuse_stereo(tmp_path: Path, reader) -> None:
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(8))
    with pytest.raises(ValueError, match="mono"):
        reader(path)
