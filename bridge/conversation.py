"""Model-session continuity for a call: what a new session is given of the old one.

Sans-I/O, like ``bridge.call`` (which owns when these are used). It owns:

- ``Turn`` and ``Conversation``: the conversation so far (bounded: the latest
  ``HISTORY_ITEMS`` turns, as the caller heard them, cut where a barge-in cut them), the
  assistant's transcript deltas, and the replay items a new session is given;
- ``HeldAudio``: the caller's latest audio (as the model takes it, a ring of ``HOLD_MS``)
  while there is no session, or of an utterance in progress when one ends;
- ``comfort_noise``: the leg payloads played while the first session is slow to open.

It must not import asyncio, starlette, websockets or socketio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.ai import events as rt
from bridge.audio.transcode import Codec, Downlink
from bridge.recent import Recent

# Conversation turns remembered for a new session (the replay sends at most
# ``replay_max_items`` of them, newest kept).
HISTORY_ITEMS = 64
# Caller audio kept while there is no model session: the latest this many ms (PCM16 24 kHz).
HOLD_MS = 3000
_BYTES_PER_MS = 48  # PCM16 24 kHz (μ-law: 8)


@dataclass
class Turn:
    """One turn of the conversation, as the caller experienced it."""

    role: str  # "user" or "assistant"
    item_id: str | None
    text: str | None = None  # None: no transcript (yet)
    heard: float | None = None  # fraction of an assistant item the caller heard (None: all)

    def replay_text(self) -> str | None:
        """What a new session is told of this turn (None: nothing worth telling)."""
        text = (self.text or "").strip()
        if not text or (self.heard is not None and self.heard <= 0):
            return None
        if self.heard is not None and self.heard < 1:
            cut = max(1, round(len(text) * self.heard))
            text = text[:cut]
            if cut < len(self.text or "") and " " in text:
                text = text.rsplit(" ", 1)[0]
            text = text.rstrip() + "…"
        return text


class Conversation:
    """The latest ``HISTORY_ITEMS`` turns, and the replay of them for a new session."""

    def __init__(self, max_items: int = HISTORY_ITEMS) -> None:
        self._turns: deque[Turn] = deque(maxlen=max_items)
        self._assistant_text: Recent[str, str] = Recent()  # transcript deltas so far

    @property
    def turns(self) -> list[Turn]:
        return list(self._turns)

    def turn(self, item_id: str) -> Turn | None:
        for turn in reversed(self._turns):
            if turn.item_id == item_id:
                return turn
        return None

    def user(self, item_id: str | None, text: str | None = None) -> None:
        """A user turn (typed: no ``item_id``), or its transcript when it is already here."""
        turn = self.turn(item_id) if item_id is not None else None
        if turn is None:
            self._turns.append(Turn("user", item_id, text))
        elif text is not None:
            turn.text = text

    def earlier(self, role: str, text: str) -> None:
        """A turn of an earlier call of this conversation (no item in any session)."""
        self._turns.append(Turn("assistant" if role == "assistant" else "user", None, text))

    def assistant(self, item_id: str) -> None:
        """An assistant message item started."""
        self._turns.append(Turn("assistant", item_id))

    def assistant_delta(self, item_id: str, delta: str) -> None:
        self._assistant_text.put(item_id, (self._assistant_text.get(item_id) or "") + delta)

    def assistant_done(self, item_id: str, text: str) -> None:
        turn = self.turn(item_id)
        if turn is None:
            self._turns.append(Turn("assistant", item_id, text))
        else:
            turn.text = text

    def heard(self, item_id: str, fraction: float) -> None:
        """The caller heard ``fraction`` of the item (a barge-in cut it)."""
        turn = self.turn(item_id)
        if turn is not None:
            turn.heard = fraction

    def unheard(self, item_id: str) -> None:
        """The item was dropped: none of it was heard unless a cut said otherwise."""
        turn = self.turn(item_id)
        if turn is not None and turn.heard is None:
            turn.heard = 0.0

    def settle(self) -> None:
        """The session ended: assistant turns without a final transcript keep their deltas."""
        for turn in self._turns:
            if turn.role == "assistant" and turn.text is None and turn.item_id is not None:
                turn.text = self._assistant_text.get(turn.item_id)

    def replay(self, max_items: int) -> list[dict[str, Any]]:
        """The conversation so far as items for a new session (the latest ``max_items``)."""
        texts = [(t.role, text) for t in self._turns if (text := t.replay_text())]
        texts = texts[-max_items:] if max_items > 0 else []
        return [
            rt.user_text(text) if role == "user" else rt.assistant_text(text)
            for role, text in texts
        ]


class HeldAudio:
    """The caller's latest ``HOLD_MS`` of audio in the model's input format (a bounded ring)."""

    def __init__(self, bytes_per_ms: int = _BYTES_PER_MS) -> None:
        self._chunks: deque[bytes] = deque()
        self._bytes = 0
        self._bytes_per_ms = bytes_per_ms  # 8 when the model takes μ-law
        self._max_bytes = HOLD_MS * bytes_per_ms

    def add(self, pcm: bytes) -> None:
        self._chunks.append(pcm)
        self._bytes += len(pcm)
        while self._bytes > self._max_bytes:
            self._bytes -= len(self._chunks.popleft())

    @property
    def ms(self) -> int:
        return self._bytes // self._bytes_per_ms

    def drain(self, chunk_ms: int) -> list[bytes]:
        """Everything held, rejoined into pieces of ``chunk_ms`` (fewer, larger appends);
        the ring is left empty."""
        chunk_bytes = chunk_ms * self._bytes_per_ms
        data = b"".join(self._chunks)
        self.clear()
        return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0


def comfort_noise(codec: Codec, rate: int, ms: int, frame_bytes: int) -> list[bytes]:
    """``ms`` of faint noise (~-60 dBFS) in the leg's format, whole frames, one payload a
    second of audio."""
    noise = np.random.default_rng().integers(-40, 41, 24 * ms, dtype=np.int16)
    payload = Downlink(codec, rate).encode(noise.astype("<i2").tobytes())
    payload = payload[: len(payload) // frame_bytes * frame_bytes]
    step = frame_bytes * 50
    return [payload[i : i + step] for i in range(0, len(payload), step)]
