"""Energy voice-activity detection for the local agent's ``server_vad``. Sans-I/O.

Owns speech start/stop decisions on a PCM16 24 kHz stream, in the stream's own timeline
(milliseconds of audio pushed since the start), the way the Realtime service reports
``audio_start_ms`` / ``audio_end_ms``. It never reads a clock and knows nothing of events.

The audio is cut into 10 ms frames. A frame is *loud* when its RMS level is above both an
absolute floor (set by ``threshold``: 0.5 → -40 dBFS) and the noise floor plus a margin
(10 dB); the noise floor is the quietest frame of the last 2 s, so a steady hiss or hum
raises the bar instead of triggering. Speech starts once
``min_speech_ms`` of loud frames have gathered with no gap longer than ``max_gap_ms``:
a click shorter than that never qualifies. The onset is the first loud frame of that run;
``audio_start_ms`` is the onset minus ``prefix_padding_ms`` (not below 0). Speech stops
after ``silence_duration_ms`` without a loud frame; ``audio_end_ms`` is where that silence
completed (it includes the silence, as the service's does).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

RATE = 24000
FRAME_MS = 10
FRAME_SAMPLES = RATE * FRAME_MS // 1000
_POWER_SCALE = 1.0 / FRAME_SAMPLES / 32768.0**2  # sum of squares -> power re full scale
_SILENT_DB = -100.0
_BLOCK_FRAMES = 10
_FLOOR_WINDOW_MS = 2000
_NO_SAMPLES = np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class VadStart:
    onset_ms: int  # first loud frame
    audio_start_ms: int  # onset minus prefix padding, >= 0


@dataclass(frozen=True)
class VadStop:
    audio_end_ms: int


def threshold_dbfs(threshold: float) -> float:
    """Map the API's 0..1 ``threshold`` to an absolute level: 0 → -55, 0.5 → -40, 1 → -25."""
    return -55.0 + 30.0 * min(max(threshold, 0.0), 1.0)


class EnergyVad:
    """Streaming energy VAD; ``push`` audio, get start/stop decisions."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        min_speech_ms: int = 100,
        max_gap_ms: int = 30,
        noise_margin_db: float = 10.0,
    ) -> None:
        self.configure(
            threshold=threshold,
            prefix_padding_ms=prefix_padding_ms,
            silence_duration_ms=silence_duration_ms,
        )
        self.min_speech_ms = min_speech_ms
        self.max_gap_ms = max_gap_ms
        self.noise_margin_db = noise_margin_db
        self.noise_floor_db = _SILENT_DB
        self._blocks: deque[float] = deque(maxlen=_FLOOR_WINDOW_MS // (_BLOCK_FRAMES * FRAME_MS))
        self._blocks_min = math.inf  # min(self._blocks), kept as blocks complete
        self._block_min = math.inf
        self._block_frames = 0
        self.speaking = False
        self.position_ms = 0  # end of the last whole frame analysed
        self._rest = _NO_SAMPLES
        self._run_start_ms: int | None = None  # candidate onset
        self._run_loud_ms = 0
        self._gap_ms = 0
        self._silence_ms = 0

    def configure(
        self, *, threshold: float, prefix_padding_ms: int, silence_duration_ms: int
    ) -> None:
        self.absolute_db = threshold_dbfs(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms

    def push(self, pcm: np.ndarray) -> list[VadStart | VadStop]:
        """Analyse more int16 samples; return decisions in stream order."""
        if self._rest.size:
            pcm = np.concatenate([self._rest, pcm])
        whole = pcm.size - pcm.size % FRAME_SAMPLES
        self._rest = pcm[whole:].copy() if whole < pcm.size else _NO_SAMPLES
        if not whole:
            return []
        frames = pcm[:whole].reshape(-1, FRAME_SAMPLES).astype(np.float64)
        power = (frames * frames).sum(axis=1) * _POWER_SCALE
        out: list[VadStart | VadStop] = []
        for p in power.tolist():
            level = 10.0 * math.log10(p) if p > 1e-10 else _SILENT_DB
            decision = self._frame(level)
            if decision is not None:
                out.append(decision)
        return out

    def _frame(self, level: float) -> VadStart | VadStop | None:
        start_ms = self.position_ms
        self.position_ms += FRAME_MS
        self._track_noise(level)
        loud = level > max(self.absolute_db, self.noise_floor_db + self.noise_margin_db)
        if self.speaking:
            if loud:
                self._silence_ms = 0
                return None
            self._silence_ms += FRAME_MS
            if self._silence_ms >= self.silence_duration_ms:
                self.speaking = False
                self._reset_run()
                return VadStop(self.position_ms)
            return None
        if loud:
            if self._run_start_ms is None:
                self._run_start_ms = start_ms
            self._run_loud_ms += FRAME_MS
            self._gap_ms = 0
            if self._run_loud_ms >= self.min_speech_ms:
                onset = self._run_start_ms
                self.speaking = True
                self._silence_ms = 0
                self._reset_run()
                return VadStart(onset, max(0, onset - self.prefix_padding_ms))
        elif self._run_start_ms is not None:
            self._gap_ms += FRAME_MS
            if self._gap_ms > self.max_gap_ms:
                self._reset_run()
        return None

    def _track_noise(self, level: float) -> None:
        # Minimum statistics: the quietest 10 ms frame of the last ~2 s is the noise floor.
        # Speech always has quieter frames between syllables, so it does not lift the floor;
        # a steady hiss or hum does.
        if level < self._block_min:
            self._block_min = level
        self._block_frames += 1
        if self._block_frames == _BLOCK_FRAMES:
            self._blocks.append(self._block_min)
            self._blocks_min = min(self._blocks)
            self._block_min = math.inf
            self._block_frames = 0
        self.noise_floor_db = min(self._blocks_min, self._block_min)

    def _reset_run(self) -> None:
        self._run_start_ms = None
        self._run_loud_ms = 0
        self._gap_ms = 0

    def stop_now(self) -> None:
        """Forget the current utterance (the buffer was committed or cleared by hand)."""
        self.speaking = False
        self._silence_ms = 0
        self._reset_run()
