"""The local agent's input audio buffer: PCM16 24 kHz appended by the client, its timeline,
and the VAD that listens to it. Sans-I/O.

Owns the audio side of ``input_audio_buffer.*``: decoding appends (an odd byte waits for
its pair; ``audio/pcmu`` is converted by ``bridge.local_agent.codec`` first), counting
samples since the session started (the timeline ``audio_start_ms`` / ``audio_end_ms`` are
measured in), slicing committed audio out, and forgetting audio no commit can ask for any
more, so a long call holds seconds, not minutes, in memory. What the events say is decided
by ``bridge.local_agent.session``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.local_agent.codec import InputDecoder, is_pcmu
from bridge.local_agent.session_config import PCM
from bridge.local_agent.vad import EnergyVad, VadStart, VadStop

SAMPLES_PER_MS = 24
MAX_MANUAL_BUFFER_MS = 10 * 60 * 1000  # without VAD, uncommitted audio is kept up to this
_PRE_ROLL_MS = 2000  # kept while idle, on top of the prefix padding
_TRIM_SLACK_MS = 5000  # trim in big steps, not on every append


class InputAudio:
    def __init__(self) -> None:
        self.vad = EnergyVad()
        self.samples_in = 0  # the timeline: samples appended since the session started
        self.uncommitted_from = 0
        self._buf = bytearray()  # audio from sample ``_origin`` to ``samples_in``
        self._origin = 0
        self._odd = b""
        self._decoder = InputDecoder()

    @property
    def buffered_ms(self) -> float:
        return len(self._buf) / 2 / SAMPLES_PER_MS

    def append(
        self, audio: bytes, *, vad_on: bool, fmt: dict[str, Any] = PCM
    ) -> list[VadStart | VadStop]:
        """Add audio sent in ``fmt``; return the VAD's decisions (none when turn detection
        is off)."""
        if is_pcmu(fmt):
            self._odd = b""  # half a PCM16 sample left by a format switch: nothing to pair
        data = self._odd + self._decoder.decode(audio, fmt)
        even = len(data) - len(data) % 2
        self._odd = data[even:]
        self._buf += data[:even]
        samples = np.frombuffer(data[:even], dtype="<i2")
        self.samples_in += samples.size
        # The VAD hears everything, so its timeline stays the buffer's own.
        decisions = self.vad.push(samples)
        if not vad_on:
            self.vad.stop_now()
            return []
        return decisions

    def audio(self, start: int, end: int) -> bytes:
        """The audio between two sample positions of the timeline (what is still held)."""
        lo, hi = max(start, self._origin), min(end, self.samples_in)
        if hi <= lo:
            return b""
        return bytes(self._buf[(lo - self._origin) * 2 : (hi - self._origin) * 2])

    def committed(self, end: int) -> None:
        self.uncommitted_from = max(self.uncommitted_from, end)

    def settle(self) -> None:
        """Take in what the μ-law upsampler still holds (a commit or clear ends the stream
        here) and end the VAD's utterance: both need every appended millisecond."""
        self.append(self._decoder.flush(), vad_on=False)

    def clear(self) -> None:
        self.settle()
        self._buf.clear()
        self._origin = self.uncommitted_from = self.samples_in
        self.vad.stop_now()

    def trim(self, *, vad_on: bool, speaking_from_ms: int | None) -> None:
        """Forget audio no commit can ask for: with VAD, everything before the utterance
        (or the pre-roll while idle); without, everything committed (and the oldest beyond
        the cap)."""
        if not vad_on:
            keep = max(
                self.uncommitted_from, self.samples_in - MAX_MANUAL_BUFFER_MS * SAMPLES_PER_MS
            )
        elif speaking_from_ms is not None:
            keep = speaking_from_ms * SAMPLES_PER_MS
        else:
            keep = self.samples_in - (self.vad.prefix_padding_ms + _PRE_ROLL_MS) * SAMPLES_PER_MS
        drop = keep - self._origin
        if drop > _TRIM_SLACK_MS * SAMPLES_PER_MS:
            del self._buf[: drop * 2]
            self._origin = keep
