"""Bridge-side barge-in detection: caller speech over the agent, without the model's round trip.

Pure and synchronous. The Call feeds the level of every 20 ms uplink frame (measured on the
leg's samples by ``bridge.uplink``) with the current time and whether agent audio is
playing, and tells the detector the level of agent audio as it is
released toward the caller (``leg_level_dbfs`` reads it in the leg's format). The detector
fires once the caller has really spoken for ``min_speech_ms``. It guards against false
barge-in:

- short noises (clicks, bumps): speech must add up to ``min_speech_ms`` with no pause of
  ``PAUSE_MS`` in between (dips between syllables only slow the count down);
- line noise: the threshold sits ``snr_db`` above an adaptive noise floor;
- the line's own echo of the agent: while the agent plays, the caller must also be louder
  than the agent's recent level minus ``echo_margin_db`` (a phone echo path loses 10 to 30 dB);
- the greeting guard window is the Call's concern (it knows when the greeting started).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from bridge.audio.formats import MODEL_RATE
from bridge.audio.g711 import ulaw_decode
from bridge.audio.transcode import Codec

FRAME_MS = 20
# Agent audio can come back as echo this long after we released it (lead + line + network).
ECHO_WINDOW_S = 0.8
PAUSE_MS = 200
_EMPTY = np.zeros(0, dtype=np.int16)


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples in dB relative to full scale (-120 for silence)."""
    if pcm.size == 0:
        return -120.0
    x = pcm.astype(np.float32)
    rms = math.sqrt(float(np.dot(x, x)) / pcm.size)
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


def leg_level_dbfs(payload: bytes, codec: Codec) -> float:
    """Level of leg-format audio (μ-law, or PCM16LE) in dBFS, as released to the caller."""
    if codec == "mulaw":
        return level_dbfs(ulaw_decode(payload))
    return level_dbfs(np.frombuffer(payload, dtype="<i2"))


class LocalBargeIn:
    def __init__(
        self,
        *,
        min_speech_ms: int = 200,
        floor_dbfs: float = -45.0,
        snr_db: float = 15.0,
        echo_margin_db: float = 10.0,
    ) -> None:
        self.min_speech_ms = min_speech_ms
        self.floor_dbfs = floor_dbfs  # absolute minimum: quieter than this is never speech
        self.snr_db = snr_db
        self.echo_margin_db = echo_margin_db
        self.noise_dbfs = floor_dbfs - snr_db  # adaptive noise floor estimate
        self._speech_ms = 0
        self._gap_ms = 0
        self._fired = False
        self._agent: deque[tuple[float, float]] = deque(maxlen=64)  # (released at, dBFS)
        self._agent_max = -120.0
        self._buffer = _EMPTY

    def agent_audio(self, level: float, now: float) -> None:
        """Agent audio at ``level`` dBFS was released toward the caller at ``now``."""
        self._agent.append((now, level))
        self._agent_max = max(self._agent_max, level)

    def levels(self, levels: list[float], *, playing: bool, now: float) -> bool:
        """Levels (dBFS) of consecutive 20 ms caller frames; True when they make a barge-in
        (fires once per run of speech)."""
        agent = self._recent_agent_level(now) if playing else None
        fired = False
        for level in levels:
            fired |= self._frame(level, playing, agent)
        return fired

    def feed(self, pcm24: bytes, *, playing: bool, now: float) -> bool:
        """Caller audio as PCM16 24 kHz: :meth:`levels` of its whole frames."""
        samples = np.frombuffer(pcm24, dtype="<i2")
        if self._buffer.size:
            samples = np.concatenate([self._buffer, samples])
        frame = MODEL_RATE * FRAME_MS // 1000
        whole = samples.size - samples.size % frame
        self._buffer = samples[whole:].copy() if whole < samples.size else _EMPTY
        levels = [level_dbfs(samples[s : s + frame]) for s in range(0, whole, frame)]
        return self.levels(levels, playing=playing, now=now)

    def _recent_agent_level(self, now: float) -> float | None:
        """The loudest agent audio released within the echo window (None: none)."""
        stale = False
        while self._agent and now - self._agent[0][0] > ECHO_WINDOW_S:
            self._agent.popleft()
            stale = True
        if stale:  # recompute only when the loudest may have left the window
            self._agent_max = max((lvl for _, lvl in self._agent), default=-120.0)
        return self._agent_max if self._agent else None

    def _frame(self, level: float, playing: bool, agent: float | None) -> bool:
        threshold = max(self.floor_dbfs, self.noise_dbfs + self.snr_db)
        if agent is not None:
            threshold = max(threshold, agent - self.echo_margin_db)
        speech = level > threshold
        if not speech:
            # Track the noise floor: follow quiet frames down fast, loud ones up slowly.
            step = 0.5 if level < self.noise_dbfs else 0.02
            self.noise_dbfs += (level - self.noise_dbfs) * step
            # Speech has short dips between syllables: let the count leak away slowly,
            # and start over only after a real pause.
            self._gap_ms += FRAME_MS
            if self._gap_ms >= PAUSE_MS:
                self._speech_ms = 0
                self._fired = False
            else:
                self._speech_ms = max(0, self._speech_ms - 10)
            return False
        self._gap_ms = 0
        self._speech_ms += FRAME_MS
        if self._fired or not playing or self._speech_ms < self.min_speech_ms:
            return False
        self._fired = True  # once per run of speech
        return True
