"""The model's audio format, defined once: PCM16LE mono at 24 kHz, both directions (or,
per agent, G.711 μ-law 8 kHz passed through from a Twilio leg: ``ModelAudio``).

The Realtime API's ``audio/pcm`` (https://platform.openai.com/docs/api-reference/realtime):
the session config (``bridge.ai.events``), the transcoders (``bridge.audio.transcode``) and
the Call's per-item duration count (``bridge.spoken``) all derive from these. Constants
only: nothing to import here but the standard library.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["MODEL_BYTES_PER_MS", "MODEL_RATE", "ModelAudio"]

# What the model is sent and speaks: PCM16 24 kHz ("pcm16") or μ-law 8 kHz ("pcmu").
ModelAudio = Literal["pcm16", "pcmu"]

MODEL_RATE = 24000  # Hz
MODEL_BYTES_PER_MS = MODEL_RATE * 2 / 1000  # PCM16 mono: two bytes a sample
