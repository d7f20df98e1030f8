"""The caller's audio on its way to the model, sans-I/O.

Owns, for one call: the caller audio not yet sent (leg format), when enough has gathered
to send (``batch_ms``: fewer, larger ``input_audio_buffer.append`` messages), its
conversion to the model's format at that moment (streamed to PCM16 24 kHz, or μ-law passed
through untouched when the model takes ``audio/pcmu``), and the level of every 20 ms frame
of it, for the local barge-in detector.

Why measure levels here, on the leg's own samples: while the agent plays, a frame's level
is needed at once (a barge-in must not wait for the batch); decoding and resampling pay per
call, not per sample, so they wait for the batch, and so do the levels while nobody could
be interrupted. For μ-law the level is one table lookup of squared
sample values; the resampler's passband keeps speech power within a fraction of a dB, so
the level of the 8 kHz frame is the level of the audio the model hears.

It must not touch the model protocol, the barge-in policy (``bridge.barge_in``,
``bridge.call``), sockets or the clock.
"""

from __future__ import annotations

import math

import numpy as np

from bridge.audio.formats import ModelAudio, hears_pcmu
from bridge.audio.g711 import ulaw_decode
from bridge.audio.transcode import Codec, Uplink

__all__ = ["FRAME_MS", "ModelAudio", "UplinkPath", "model_audio_for"]

FRAME_MS = 20

_SILENT_DBFS = -120.0
_FULL_SCALE_DB = 20 * math.log10(32768)
# Squared value of every μ-law code, as float64: a frame's power is one gather and a sum.
_ULAW_SQUARES = ulaw_decode(bytes(range(256))).astype(np.float64) ** 2


def model_audio_for(wanted: ModelAudio, codec: Codec, rate: int) -> ModelAudio:
    """The model's audio for a leg: μ-law passes through only from a μ-law 8 kHz leg."""
    return wanted if codec == "mulaw" and rate == 8000 else "pcm16"


def _dbfs(mean_square: float) -> float:
    return 10 * math.log10(mean_square) - _FULL_SCALE_DB if mean_square > 0 else _SILENT_DBFS


class UplinkPath:
    """Caller audio in (leg format, any chunk size), model audio out in batches."""

    def __init__(
        self, codec: Codec, rate: int, *, model_audio: ModelAudio = "pcm16", batch_ms: int = 20
    ) -> None:
        if batch_ms < FRAME_MS or batch_ms % FRAME_MS:
            raise ValueError(f"batch_ms must be a positive multiple of {FRAME_MS}")
        if model_audio != model_audio_for(model_audio, codec, rate):
            raise ValueError("μ-law pass-through needs a μ-law 8 kHz leg")
        self.codec = codec
        self.rate = rate
        self.model_audio: ModelAudio = model_audio
        self.sample_bytes = 1 if codec == "mulaw" else 2
        self.frame_bytes = rate * FRAME_MS // 1000 * self.sample_bytes
        self.batch_bytes = self.frame_bytes * (batch_ms // FRAME_MS)
        self._transcoder = None if hears_pcmu(model_audio) else Uplink(codec, rate)
        self._pending = bytearray()  # leg audio not yet sent
        self._metered = 0  # bytes at the start of _pending whose levels were measured

    @property
    def model_bytes_per_ms(self) -> float:
        return 8.0 if self._transcoder is None else 48.0

    def add(self, payload: bytes) -> None:
        """Take caller audio (any size)."""
        self._pending += payload

    def _whole(self) -> int:
        """Bytes of whole frames waiting (a partial frame waits for the rest)."""
        size = len(self._pending)
        return size - size % self.frame_bytes

    def levels(self) -> list[float]:
        """The levels (dBFS) of the whole frames not measured yet, oldest first.

        Call it for every frame when a barge-in must not wait (the agent is playing), or
        just before :meth:`take` otherwise: several frames cost one pass."""
        end = self._whole()
        if end <= self._metered:
            return []
        frames = bytes(self._pending[self._metered : end])
        self._metered = end
        if self.codec == "mulaw":
            power = _ULAW_SQUARES.take(np.frombuffer(frames, dtype=np.uint8))
        else:
            samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
            power = samples * samples
        count = len(frames) // self.frame_bytes
        n = power.size // count  # samples per frame
        if count == 1:
            return [_dbfs(float(power.sum()) / n)]
        return [_dbfs(float(s) / n) for s in power.reshape(count, n).sum(axis=1)]

    @property
    def full(self) -> bool:
        """A batch's worth of whole frames is waiting: time to :meth:`take` it."""
        return self._whole() >= self.batch_bytes

    def take(self) -> bytes:
        """The whole frames waiting, in the model's format (may be empty: nothing waits, or
        a resampler is filling). Frames not yet measured are not measured any more."""
        end = self._whole()
        if end == 0:
            return b""
        leg = bytes(self._pending[:end])
        del self._pending[:end]
        self._metered = max(0, self._metered - end)
        return leg if self._transcoder is None else self._transcoder.decode(leg)

    @property
    def delay_ms(self) -> float:
        """Algorithmic delay of the conversion (0 when passed through)."""
        return 0.0 if self._transcoder is None else self._transcoder.delay_ms
