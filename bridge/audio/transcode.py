"""Stateful transcoders between a phone leg's audio and the model's PCM16 24 kHz.

Owns the two directions of a call's audio path, in the shape of httpx's streaming
decoders (``decode(bytes) -> bytes`` + ``flush()``):

* ``Uplink``: leg audio (μ-law 8 kHz from Twilio, or PCM16LE at the softphone's rate)
  -> PCM16LE 24 kHz for ``input_audio_buffer.append``;
* ``Downlink``: PCM16LE 24 kHz from ``response.output_audio.delta`` -> leg audio.

Each keeps its state across calls (resampler history, a dangling odd byte of PCM16), so
payloads may be any size. Nothing here knows about sockets, JSON, base64 or time.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from bridge.audio.formats import MODEL_RATE
from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.resample import StreamResampler

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_RATE",
    "MULAW_SILENCE",
    "PCM16_SILENCE",
    "Codec",
    "Downlink",
    "Uplink",
]

Codec = Literal["mulaw", "pcm16"]

MULAW_SILENCE = b"\xff"  # μ-law code for 0
PCM16_SILENCE = b"\x00"

_PCM16LE = np.dtype("<i2")


def _check_leg(codec: str, rate: int) -> None:
    if codec not in ("mulaw", "pcm16"):
        raise ValueError(f"unknown leg codec {codec!r} (expected 'mulaw' or 'pcm16')")
    if rate <= 0:
        raise ValueError(f"leg sample rate must be positive, got {rate}")


def _pcm16le_bytes(pcm: np.ndarray) -> bytes:
    return pcm.astype(_PCM16LE, copy=False).tobytes()


class Uplink:
    """Caller -> model: leg audio bytes in, PCM16LE 24 kHz bytes out."""

    def __init__(self, codec: Codec, rate: int) -> None:
        _check_leg(codec, rate)
        self.codec = codec
        self.rate = rate
        self._resampler = StreamResampler(rate, MODEL_RATE)
        self._odd = b""  # half a PCM16 sample left over from the previous payload

    @property
    def delay_ms(self) -> float:
        """Algorithmic delay added by this direction."""
        return self._resampler.delay_ms

    def decode(self, payload: bytes) -> bytes:
        if self.codec == "mulaw":
            pcm = ulaw_decode(payload)
        else:
            if self._odd:
                payload = self._odd + payload
            whole = len(payload) & ~1
            self._odd = payload[whole:]
            pcm = np.frombuffer(payload, dtype=_PCM16LE, count=whole // 2)
        return _pcm16le_bytes(self._resampler.process(pcm))

    def flush(self) -> bytes:
        """End of the stream: return what the resampler held back, then start afresh."""
        if self._odd:
            logger.debug("uplink: dropping a dangling odd byte at flush")
            self._odd = b""
        return _pcm16le_bytes(self._resampler.flush())


class Downlink:
    """Model -> caller: PCM16LE 24 kHz bytes in, leg audio bytes out."""

    def __init__(self, codec: Codec, rate: int) -> None:
        _check_leg(codec, rate)
        self.codec = codec
        self.rate = rate
        sample_bytes = 1 if codec == "mulaw" else 2
        self.bytes_per_ms: float = sample_bytes * rate / 1000
        self._resampler = StreamResampler(MODEL_RATE, rate)
        self._odd = b""

    @property
    def delay_ms(self) -> float:
        """Algorithmic delay added by this direction."""
        return self._resampler.delay_ms

    def _to_leg(self, pcm: np.ndarray) -> bytes:
        if self.codec == "mulaw":
            return ulaw_encode(pcm)
        return _pcm16le_bytes(pcm)

    def encode(self, pcm24: bytes) -> bytes:
        if self._odd:
            pcm24 = self._odd + pcm24
        whole = len(pcm24) & ~1
        self._odd = pcm24[whole:]
        pcm = np.frombuffer(pcm24, dtype=_PCM16LE, count=whole // 2)
        return self._to_leg(self._resampler.process(pcm))

    def flush(self) -> bytes:
        """End of the stream: return what the resampler held back, then start afresh."""
        if self._odd:
            logger.debug("downlink: dropping a dangling odd byte at flush")
            self._odd = b""
        return self._to_leg(self._resampler.flush())
