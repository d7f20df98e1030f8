"""The conversation of one local-agent session: its items, and the events about them. Sans-I/O.

Owns the ordered conversation items (user audio committed from the input buffer, the
assistant items responses speak into, items a client creates) and what the
``conversation.item.*`` client events do to them: create, delete, retrieve and truncate,
each checked the way the service checks it, and the ``committed`` / ``added`` / ``done``
(and placeholder input transcription) events of a user turn. It also remembers which
committed user audio is still unanswered. Each operation returns the server events to
send, built with ``server_event``, or the :class:`Problem` to report:
``bridge.local_agent.session`` turns a Problem into an ``error`` event and decides when
items are made and when a response starts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bridge.local_agent.checks import (
    ITEM_TYPES,
    Problem,
    bad_item_type,
    check_truncate,
    item_exists,
    no_item,
)

Emit = Callable[..., dict[str, Any]]  # emit(event_type, **fields) -> event with an id
Events = list[dict[str, Any]]
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def new_id(rng: random.Random, prefix: str) -> str:
    """An id the way the service makes them (``item_…``, ``event_…``)."""
    return prefix + "_" + "".join(rng.choices(_ID_ALPHABET, k=21))


def server_event(rng: random.Random, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id(rng, "event"), **fields}


@dataclass
class Item:
    """A conversation item as the local agent keeps it."""

    id: str
    role: str
    audio: bytes = b""
    transcript: str | None = None
    status: str = "completed"
    raw: dict[str, Any] | None = None  # items created by the client, as given

    def wire(self) -> dict[str, Any]:
        if self.raw is not None:
            return self.raw
        content: list[dict[str, Any]] = []
        if self.role == "user":
            content = [{"type": "input_audio", "transcript": self.transcript}]
        elif self.status != "in_progress":
            content = [{"type": "output_audio", "transcript": self.transcript}]
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": content,
        }


class Conversation:
    def __init__(self, rng: random.Random) -> None:
        # Functions of the session's generator, not its bound methods: a session must not
        # hold itself in a cycle, or its audio waits for a full collection once dropped.
        self._emit = partial(server_event, rng)
        self._new_id = partial(new_id, rng)
        self.items: dict[str, Item] = {}
        self.pending: str | None = None  # committed user audio not answered yet

    def last_item_id(self) -> str | None:
        return next(reversed(self.items), None)

    def commit(self, item_id: str, audio: bytes, *, transcribe: bool) -> Events:
        """A user turn's audio becomes an item, to be answered by the next response."""
        emit = self._emit
        previous = self.last_item_id()
        item = Item(item_id, "user", audio=audio)
        self.items[item_id] = item
        self.pending = item_id
        out = [
            emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            emit("conversation.item.added", previous_item_id=previous, item=item.wire()),
            emit("conversation.item.done", previous_item_id=previous, item=item.wire()),
        ]
        if transcribe:
            seconds = round(len(audio) / 2 / 24000, 3)
            item.transcript = f"[caller speech {seconds:.1f} s]"
            out.append(
                emit(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=item.transcript,
                    usage={"type": "duration", "seconds": seconds},
                )
            )
        return out

    def take_pending(self) -> bytes | None:
        """The unanswered user audio, now being answered (None: there is none)."""
        item_id, self.pending = self.pending, None
        return None if item_id is None else self.items[item_id].audio

    def add_assistant(self) -> tuple[Item, str | None]:
        """A new in-progress assistant item, and the id of the item before it."""
        previous = self.last_item_id()
        item = Item(self._new_id("item"), "assistant", status="in_progress")
        self.items[item.id] = item
        return item, previous

    def truncate(
        self, item_id: str, content_index: int, audio_end_ms: int, sent_ms: float
    ) -> Events | Problem:
        """Cut an assistant item's audio at what the client says was heard (of ``sent_ms``)."""
        item = self.items.get(item_id)
        role = None if item is None else "client item" if item.raw is not None else item.role
        problem = check_truncate(role, item_id, content_index, audio_end_ms, sent_ms)
        if problem:
            return problem
        return [
            self._emit(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=content_index,
                audio_end_ms=audio_end_ms,
            )
        ]

    def create(self, raw: dict[str, Any]) -> Events | Problem:
        kind = raw.get("type")
        if kind not in ITEM_TYPES:
            return bad_item_type(kind)
        item_id = raw.get("id") or self._new_id("item")
        if item_id in self.items:
            return item_exists(item_id)
        wire = {**raw, "id": item_id, "object": "realtime.item", "status": "completed"}
        previous = self.last_item_id()
        self.items[item_id] = Item(item_id, str(raw.get("role", "")), raw=wire)
        return [
            self._emit("conversation.item.added", previous_item_id=previous, item=wire),
            self._emit("conversation.item.done", previous_item_id=previous, item=wire),
        ]

    def delete(self, item_id: str) -> Events | Problem:
        if self.items.pop(item_id, None) is None:
            return no_item("deleting", item_id)
        if self.pending == item_id:
            self.pending = None
        return [self._emit("conversation.item.deleted", item_id=item_id)]

    def retrieve(self, item_id: str) -> Events | Problem:
        item = self.items.get(item_id)
        if item is None:
            return no_item("retrieving", item_id)
        return [self._emit("conversation.item.retrieved", item=item.wire())]
