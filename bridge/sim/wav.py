"""Reading and writing 16-bit mono WAV files with the standard library (for the simulator).

A deliberate copy of ``bridge.audio.wav``: the simulator is an independent double of
Twilio that talks to the bridge over the wire only, so it imports none of the bridge's
audio code (a bug there must not hide itself by being on both sides of a test). The two
agree on what they accept: mono 16-bit PCM only. Stereo is refused, not averaged: a
two-channel call recording usually holds one party per channel, and their mix is not
what a caller says.
"""

import wave
from pathlib import Path

import numpy as np


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Return (int16 samples, sample rate) of a mono 16-bit PCM WAV file."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(
                f"{path}: expected mono 16-bit PCM, got "
                f"{w.getnchannels()} channel(s) of {8 * w.getsampwidth()}-bit"
            )
        rate = w.getframerate()
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.int16), rate


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = 8000) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV file."""
    data = np.asarray(pcm, dtype=np.int16).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
