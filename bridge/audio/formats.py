"""The model's audio format, defined once: PCM16LE mono at 24 kHz, both directions (or,
per agent, G.711 μ-law 8 kHz passed through from a Twilio leg, either way or only toward
the model: ``ModelAudio``).

The Realtime API's ``audio/pcm`` (https://platform.openai.com/docs/api-reference/realtime):
the session config (``bridge.ai.events``), the transcoders (``bridge.audio.transcode``) and
the Call's per-item duration count (``bridge.spoken``) all derive from these. Constants
only: nothing to import here but the standard library.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["MODEL_BYTES_PER_MS", "MODEL_RATE", "ModelAudio", "hears_pcmu", "speaks_pcmu"]

# What the model is sent and speaks: PCM16 24 kHz both ways ("pcm16"), μ-law 8 kHz both
# ways ("pcmu"), or μ-law toward the model and PCM16 24 kHz back ("pcmu-in").
ModelAudio = Literal["pcm16", "pcmu", "pcmu-in"]

MODEL_RATE = 24000  # Hz
MODEL_BYTES_PER_MS = MODEL_RATE * 2 / 1000  # PCM16 mono: two bytes a sample


def hears_pcmu(model_audio: ModelAudio) -> bool:
    """The model is sent μ-law 8 kHz (``audio.input.format``)."""
    return model_audio != "pcm16"


def speaks_pcmu(model_audio: ModelAudio) -> bool:
    """The model speaks μ-law 8 kHz (``audio.output.format``)."""
    return model_audio == "pcmu"
