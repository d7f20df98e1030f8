"""WAV files of mono 16-bit PCM: the format of the fixtures, the greeting and recordings.

Owns reading and writing them with the standard library ``wave`` module; nothing else
(no resampling, no other sample formats: stereo is refused, not mixed down).

``bridge.sim.wav`` is a deliberate copy with the same rules: the Twilio simulator must not
import the bridge's audio code, so that it stays an independent check of it.
"""

from __future__ import annotations

import os
import wave

import numpy as np
import numpy.typing as npt

__all__ = ["read_wav", "write_wav"]

_PCM16LE = np.dtype("<i2")


def read_wav(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.int16], int]:
    """Return (samples, sample_rate) of a mono 16-bit PCM WAV file."""
    with wave.open(os.fspath(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(
                f"{os.fspath(path)}: expected mono 16-bit PCM, got "
                f"{w.getnchannels()} channel(s) of {8 * w.getsampwidth()}-bit"
            )
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype=_PCM16LE).astype(np.int16), rate


def write_wav(path: str | os.PathLike[str], pcm: npt.NDArray[np.int16], rate: int) -> None:
    """Write mono samples as a 16-bit PCM WAV file.

    Takes int16, or any integer array whose values fit in int16; floats are refused
    because their scale (±1.0 or ±32768) is ambiguous.
    """
    samples = np.asarray(pcm)
    if samples.dtype.kind not in "iu":
        raise TypeError(f"write_wav expects integer samples, got {samples.dtype}")
    if samples.size and (samples.min() < -32768 or samples.max() > 32767):
        raise ValueError("write_wav: samples outside the int16 range")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.reshape(-1).astype(_PCM16LE, copy=False).tobytes())
