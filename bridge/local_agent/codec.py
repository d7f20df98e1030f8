"""The local agent's audio formats on the wire: ``audio/pcm`` and ``audio/pcmu``. Pure.

Owns the leg of format conversion for one session, between what a client sends or
receives and the PCM16LE 24 kHz the rest of the local agent works on (its input buffer,
VAD, echo and greeting):

* :class:`InputDecoder`: ``input_audio_buffer.append`` audio in the session's input
  format -> PCM16LE 24 kHz. For ``audio/pcmu`` (G.711 μ-law, 8 kHz, one byte a sample)
  it decodes and upsamples with one streaming resampler kept across appends, so the
  24 kHz timeline (and with it ``audio_start_ms`` / ``audio_end_ms``) counts exactly three
  samples per μ-law byte once :meth:`InputDecoder.flush` has released the filter's tail.
* :class:`OutputEncoder`: one response's PCM16LE 24 kHz slices -> the response's output
  format, streamed the same way; ``bytes_per_ms`` is what ``audio_end_ms`` of a
  ``conversation.item.truncate`` is measured against (48 for pcm, 8 for pcmu).

The formats (https://platform.openai.com/docs/api-reference/realtime-client-events/session/update,
``session.audio.{input,output}.format``): ``{"type": "audio/pcm", "rate": 24000}`` and
``{"type": "audio/pcmu"}``. Which formats a session may choose is
``bridge.local_agent.session_config``'s business; this module only converts. It uses the
project's G.711 tables and streaming resampler (``bridge.audio``), nothing of the bridge's
client side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.resample import StreamResampler

__all__ = [
    "PCMU",
    "PCMU_RATE",
    "PCM_RATE",
    "InputDecoder",
    "OutputEncoder",
    "bytes_per_ms",
    "is_pcmu",
]

PCMU = "audio/pcmu"
PCM_RATE = 24000  # the local agent's own audio: PCM16LE mono
PCMU_RATE = 8000

_PCM16LE = np.dtype("<i2")


def is_pcmu(fmt: dict[str, Any]) -> bool:
    return bool(fmt.get("type") == PCMU)


def bytes_per_ms(fmt: dict[str, Any]) -> int:
    """Bytes of one millisecond of audio in ``fmt`` (a session's ``format`` object)."""
    return PCMU_RATE // 1000 if is_pcmu(fmt) else PCM_RATE * 2 // 1000


def _pcm16le(pcm: npt.NDArray[np.int16]) -> bytes:
    return pcm.astype(_PCM16LE, copy=False).tobytes()


class InputDecoder:
    """Appended audio -> PCM16LE 24 kHz, with the μ-law upsampler kept across appends."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None

    def decode(self, audio: bytes, fmt: dict[str, Any]) -> bytes:
        """``audio`` as the client sent it in ``fmt``; a switch back to pcm releases the
        μ-law stream's tail first, so the timeline stays whole."""
        if not is_pcmu(fmt):
            return self.flush() + audio if self._resampler is not None else audio
        if self._resampler is None:
            self._resampler = StreamResampler(PCMU_RATE, PCM_RATE)
        return _pcm16le(self._resampler.process(ulaw_decode(audio)))

    def flush(self) -> bytes:
        """The tail the resampler held back (a commit or clear wants it); then start afresh."""
        resampler, self._resampler = self._resampler, None
        return b"" if resampler is None else _pcm16le(resampler.flush())


class OutputEncoder:
    """One response's audio: PCM16LE 24 kHz slices in order -> its output format."""

    def __init__(self, fmt: dict[str, Any]) -> None:
        self.bytes_per_ms = bytes_per_ms(fmt)
        self._resampler = StreamResampler(PCM_RATE, PCMU_RATE) if is_pcmu(fmt) else None

    def encode(self, pcm24: bytes, *, last: bool) -> bytes:
        """The next slice (whole samples); ``last`` adds the filter's tail, so a response
        sent in full carries one μ-law byte per three samples (rounded up)."""
        if self._resampler is None:
            return pcm24
        pcm = self._resampler.process(np.frombuffer(pcm24, dtype=_PCM16LE).astype(np.int16))
        if last:
            pcm = np.concatenate((pcm, self._resampler.flush()))
        return ulaw_encode(pcm)
