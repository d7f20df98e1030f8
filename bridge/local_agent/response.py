"""One spoken response of the local agent: its audio schedule and the events around it.

Owns what the service sends for an audio response, in the order it sends it
(https://platform.openai.com/docs/api-reference/realtime-server-events): the opening
events, the audio and transcript deltas (chunks of varying size, released faster than
real time), and the closing events for a completed or cancelled response, with usage;
and the packaged greeting, what a response says when there is no caller audio to echo.
Audio is made as PCM16 24 kHz and sent in the session's output format
(``bridge.local_agent.codec``: ``audio/pcmu`` is resampled and encoded as it streams).
It keeps the conversation item the response speaks into (``bridge.local_agent.conversation``
makes it). Sans-I/O: it is told the time and returns events; ``bridge.local_agent.session``
decides when a response starts or stops.
"""

from __future__ import annotations

import random
import wave
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from bridge import b64
from bridge.local_agent.codec import OutputEncoder
from bridge.local_agent.conversation import Emit, Item

BYTES_PER_MS = 48  # PCM16 mono 24 kHz

GREETING_TRANSCRIPT = "Hello, this is the echo agent. Say something, and I will repeat it."


@lru_cache(maxsize=1)
def load_greeting() -> bytes:
    """PCM16LE 24 kHz mono of the packaged greeting: what a response with nothing to echo says."""
    ref = resources.files("bridge.local_agent").joinpath("greeting-24k.wav")
    with ref.open("rb") as raw, wave.open(raw) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (24000, 1, 2):
            raise ValueError("greeting-24k.wav must be 24 kHz mono 16-bit")
        frames: bytes = w.readframes(w.getnframes())
        return frames


@dataclass
class Chunk:
    due: float
    start: int  # byte offsets into the response audio
    end: int
    text: str  # transcript delta sent just before this audio


def schedule(
    pcm: bytes,
    transcript: str,
    *,
    start: float,
    speedup: float,
    chunk_ms: tuple[int, int],
    rng: random.Random,
) -> list[Chunk]:
    """Cut the audio in chunks of random length within ``chunk_ms`` (whole samples), each
    due when ``speedup`` times real time reaches it; spread the transcript words over them."""
    samples = len(pcm) // 2
    lo, hi = (ms * BYTES_PER_MS // 2 for ms in chunk_ms)
    bounds: list[tuple[int, int]] = []
    pos = 0
    while pos < samples:
        end = min(samples, pos + rng.randint(lo, hi))
        bounds.append((pos, end))
        pos = end
    texts = [""] * len(bounds)
    words = transcript.split()
    for j, word in enumerate(words if bounds else []):
        texts[j * len(bounds) // len(words)] += word if j == 0 else " " + word
    return [
        Chunk(start + a / 24000 / speedup, a * 2, b * 2, text)
        for (a, b), text in zip(bounds, texts, strict=True)
    ]


@dataclass
class SpokenResponse:
    id: str
    item: Item
    pcm: bytes
    transcript: str
    chunks: list[Chunk]
    input_ms: float  # input audio so far, for the usage figures
    output: dict[str, Any]  # the session's audio.output configuration
    next: int = 0
    spoken: str = ""  # transcript sent so far
    sent: bytearray = field(default_factory=bytearray)  # audio sent so far, as sent

    def __post_init__(self) -> None:
        # The format is the session's when the response started: a later session.update
        # changes the next response, not this one.
        self._encoder = OutputEncoder(self.output["format"])

    @property
    def sent_ms(self) -> float:
        """Milliseconds of audio sent: what a truncate's ``audio_end_ms`` may reach."""
        return len(self.sent) / self._encoder.bytes_per_ms

    @property
    def all_sent(self) -> bool:
        return self.next == len(self.chunks)

    def next_due(self) -> float | None:
        return self.chunks[self.next].due if self.next < len(self.chunks) else None

    def _where(self) -> dict[str, Any]:
        return {
            "response_id": self.id,
            "item_id": self.item.id,
            "output_index": 0,
            "content_index": 0,
        }

    def opening(self, emit: Emit, previous_item_id: str | None) -> list[dict[str, Any]]:
        return [
            emit("response.created", response=self.wire("in_progress")),
            emit(
                "response.output_item.added",
                response_id=self.id,
                output_index=0,
                item=self.item.wire(),
            ),
            emit(
                "conversation.item.added", previous_item_id=previous_item_id, item=self.item.wire()
            ),
            emit(
                "response.content_part.added",
                **self._where(),
                part={"type": "audio", "transcript": ""},
            ),
        ]

    def release(self, emit: Emit, horizon: float) -> list[dict[str, Any]]:
        """The transcript and audio deltas due by ``horizon``."""
        out = []
        while self.next < len(self.chunks) and self.chunks[self.next].due <= horizon:
            chunk = self.chunks[self.next]
            self.next += 1
            if chunk.text:
                self.spoken += chunk.text
                out.append(
                    emit(
                        "response.output_audio_transcript.delta", **self._where(), delta=chunk.text
                    )
                )
            audio = self._encoder.encode(
                self.pcm[chunk.start : chunk.end], last=self.next == len(self.chunks)
            )
            self.sent += audio
            out.append(
                emit(
                    "response.output_audio.delta",
                    **self._where(),
                    delta=b64.encode(audio),
                )
            )
        return out

    def closing(self, emit: Emit, status: str, reason: str | None) -> list[dict[str, Any]]:
        """From ``output_audio.done`` to ``response.done``; cancelled keeps what was sent."""
        item = self.item
        item.transcript = self.transcript if status == "completed" else self.spoken
        item.status = "completed" if status == "completed" else "incomplete"
        item.audio = bytes(self.sent)
        return [
            emit("response.output_audio.done", **self._where()),
            emit(
                "response.output_audio_transcript.done", **self._where(), transcript=item.transcript
            ),
            emit(
                "response.content_part.done",
                **self._where(),
                part={"type": "audio", "transcript": item.transcript},
            ),
            emit("conversation.item.done", previous_item_id=None, item=item.wire()),
            emit(
                "response.output_item.done", response_id=self.id, output_index=0, item=item.wire()
            ),
            emit("response.done", response=self.wire(status, reason)),
        ]

    def wire(self, status: str, reason: str | None = None) -> dict[str, Any]:
        done = status != "in_progress"
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": {"type": status, "reason": reason} if reason else None,
            "output": [self.item.wire()] if done else [],
            "conversation_id": "conv_local",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": self.output["format"], "voice": self.output["voice"]}},
            "usage": self.usage() if done else None,
            "metadata": None,
        }

    def usage(self) -> dict[str, Any]:
        # Roughly the service's rates: 10 input audio tokens/s, 20 output audio tokens/s.
        audio_in, audio_out = int(self.input_ms / 100), int(self.sent_ms / 50)
        text_out = len(self.item.transcript or "") // 4
        return {
            "total_tokens": audio_in + audio_out + text_out,
            "input_tokens": audio_in,
            "output_tokens": audio_out + text_out,
            "input_token_details": {
                "text_tokens": 0,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def rate_limits(emit: Emit, tokens_left: int) -> dict[str, Any]:
    """``rate_limits.updated``, which follows every ``response.done``."""
    return emit(
        "rate_limits.updated",
        rate_limits=[
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {
                "name": "tokens",
                "limit": 15_000_000,
                "remaining": max(0, tokens_left),
                "reset_seconds": 0.001,
            },
        ],
    )
