"""Paced playout toward one phone leg, sans-I/O: what to send to the far end, and when.

Owns the assistant audio not yet released (per item, in push order), the release rules
below, and the commands a leg is asked to play (:data:`PhoneOut`). It answers the Call's
two questions during a call, *what should we send to the far end now* (:meth:`Playout.pull`)
and *how much of the current item has the caller heard* (:meth:`Playout.heard`, read off
the far-end schedule in ``bridge.schedule``, which owns released chunks, marks and their
echoes). It also owns which items are dropped: the Call asks it (:attr:`Playout.dropped`).
It works in leg-format bytes (μ-law 8 kHz, or PCM16 at the leg rate) and must not touch
sockets, codecs, the model protocol or the wall clock: time comes in as ``now``
(seconds, monotonic).

Why pace at all: the model sends audio faster than real time and Twilio queues whatever
it gets (minutes of it). If we forwarded everything at once, a barge-in ``clear`` would
be our only lever and marks would tell us little. So only ``lead_ms`` of audio is kept
buffered at the far end; the rest waits here and is released as playback progresses,
in whole frames, in chunks of ``chunk_ms``, each chunk followed by a mark named
``f"{seq}:{item_id}"`` (``seq`` increases by one per chunk, never reused).

Release rules (``pull``): items are released in push order, one item per chunk. A chunk
is ``chunk_ms`` of whole frames (an ended item's last chunk may be shorter) and goes out
once the modelled far-end buffer plus the chunk fits in ``lead_ms``. A shorter chunk of
an item that is still streaming (fewer whole frames than a chunk are queued) waits until
the far end is down to ``chunk_ms``: fewer, larger messages while the model keeps up,
no gap when it does not. Bytes short of a whole frame wait for more audio or for
``end_item``, which pads the last partial frame with silence. ``next_due`` is the time
this rule will next release something.

A leg whose client does not echo marks (``echoes_marks=False``) is paced the same way (the
schedule counts from our release, not from echoes) and its barge-ins are truncated at
``heard``, read off the schedule alone. Its chunks retire at their modelled end instead of
at an echo: ``pull`` settles them and ``next_due`` includes the next chunk's end, so a
caller of ``pull`` at ``next_due`` sees ``active`` fall once the last chunk has played.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from bridge.recent import Recent
from bridge.schedule import Heard, PlayoutItem, Schedule, item_of_mark, mark_name, parse_mark

__all__ = [
    "ClearPlayback",
    "Heard",
    "PhoneOut",
    "Playout",
    "SendAudio",
    "SendMark",
    "item_of_mark",
    "mark_name",
    "parse_mark",
]

logger = logging.getLogger(__name__)

_EPS_MS = 1e-3  # float slack when comparing buffered durations
_COMPACT_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SendAudio:
    payload: bytes  # whole frames of one item


@dataclass(frozen=True, slots=True)
class SendMark:
    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Stop what the phone leg is playing, now (barge-in)."""


# What a leg is asked to play: the Call's ``to_phone`` outbox holds these, in order.
PhoneOut = SendAudio | SendMark | ClearPlayback


class Playout:
    """Paced release of assistant audio and accounting of what the caller heard.

    Call :meth:`pull` after every :meth:`push` / :meth:`end_item`, and again at
    :meth:`next_due`; send what it returns, in order. Feed every echoed mark to
    :meth:`on_mark`. On barge-in call :meth:`clear` (and send Twilio's ``clear``).
    """

    def __init__(
        self,
        bytes_per_ms: float,
        frame_ms: int = 20,
        lead_ms: int = 160,
        chunk_ms: int = 40,
        *,
        silence: bytes = b"\xff",
        echoes_marks: bool = True,
    ) -> None:
        frame_bytes = bytes_per_ms * frame_ms
        if bytes_per_ms <= 0 or frame_ms <= 0 or abs(frame_bytes - round(frame_bytes)) > 1e-9:
            raise ValueError("a frame must be a whole, positive number of bytes")
        if chunk_ms <= 0 or chunk_ms % frame_ms:
            raise ValueError("chunk_ms must be a positive multiple of frame_ms")
        if lead_ms < chunk_ms:
            raise ValueError("lead_ms must be at least chunk_ms")
        if len(silence) != 1:
            raise ValueError("silence must be one byte")
        self.bytes_per_ms = float(bytes_per_ms)
        self.frame_ms = frame_ms
        self.lead_ms = lead_ms
        self.chunk_ms = chunk_ms
        self.frame_bytes = round(frame_bytes)
        self._chunk_frames = chunk_ms // frame_ms
        self._silence = silence
        # The far end's side: released chunks, their marks, what echoes confirmed.
        self.schedule = Schedule(self.bytes_per_ms, echoes_marks=echoes_marks)
        self._items: deque[PlayoutItem] = deque()  # play order; every item not fully played
        self._release: deque[PlayoutItem] = deque()  # items with audio still to release
        self._by_id: dict[str, PlayoutItem] = {}
        self._dropped: Recent[str, None] = Recent()
        self._played: Recent[str, float] = Recent()  # confirmed ms of items no longer here

    # -- input from the model side ------------------------------------------------------

    def push(self, item_id: str, content_index: int, audio: bytes, model_ms: float) -> None:
        """Queue leg-format ``audio`` of an assistant item.

        ``model_ms`` is the total the model has sent for this item so far (the cap for
        :attr:`Heard.ms`). Audio for a dropped or cleared item, or pushed after
        :meth:`end_item`, is discarded. A push for a new item ends the previous one.
        """
        if item_id in self._dropped:
            logger.debug("audio for dropped item %s discarded", item_id)
            return
        item = self._by_id.get(item_id)
        if item is None:
            if self._release and not self._release[-1].ended:
                logger.debug("item %s ends implicitly", self._release[-1].item_id)
                self._end(self._release[-1])
            item = PlayoutItem(item_id, content_index)
            self._items.append(item)
            self._release.append(item)
            self._by_id[item_id] = item
        elif item.ended:
            logger.debug("audio for ended item %s discarded", item_id)
            return
        if model_ms > item.model_ms:
            item.model_ms = model_ms
        item.buf += audio
        self._prune()

    def end_item(self, item_id: str) -> None:
        """The item is complete: pad its last partial frame with silence."""
        item = self._by_id.get(item_id)
        if item is not None and not item.ended:
            self._end(item)
            self._prune()

    def drop_item(self, item_id: str) -> None:
        """Discard this item's unreleased audio and any audio pushed for it later.

        Audio already released keeps playing at the far end; use :meth:`clear` to
        silence that too.
        """
        self._dropped.add(item_id)
        item = self._by_id.get(item_id)
        if item is not None:
            item.buf = bytearray()
            item.read = 0
            item.ended = True
            self._prune()

    # -- output to the far end -----------------------------------------------------------

    def pull(self, now: float) -> list[SendAudio | SendMark]:
        """Release what is due: whole frames, one chunk of one item per mark."""
        out: list[SendAudio | SendMark] = []
        schedule = self.schedule
        if schedule.settle(now):
            self._prune()
        while (step := self._next_chunk()) is not None:
            item, size, full = step
            duration_ms = size / self.bytes_per_ms
            ahead_ms = schedule.ahead_ms(now)
            if ahead_ms + duration_ms > self.lead_ms + _EPS_MS:
                break
            if not full and ahead_ms > self.chunk_ms + _EPS_MS:
                # A short chunk of a still-streaming item waits for more audio unless the
                # far end is about to run dry: fewer, larger messages and marks.
                break
            read = item.read
            payload = bytes(item.buf[read : read + size])
            read += size
            if read >= _COMPACT_BYTES and read * 2 >= len(item.buf):
                del item.buf[:read]
                read = 0
            item.read = read
            out.append(SendAudio(payload))
            out.append(SendMark(schedule.release(item, size, now)))
        return out

    def next_due(self, now: float) -> float | None:
        """When :meth:`pull` will next release something (None: waiting for audio).

        Valid until the next push/end_item/drop_item/clear/on_mark.
        """
        settle_at = self.schedule.next_end()  # a chunk to retire (no echoes)
        step = self._next_chunk()
        if step is None:
            return None if settle_at is None else max(now, settle_at)
        _, size, full = step
        duration_ms = size / self.bytes_per_ms
        threshold_ms = self.lead_ms - duration_ms
        if not full:
            threshold_ms = min(threshold_ms, self.chunk_ms)
        due = max(now, self.schedule.free_at - threshold_ms / 1000.0)
        return due if settle_at is None else min(due, max(now, settle_at))

    # -- feedback from the far end -------------------------------------------------------

    def on_mark(self, name: str, now: float) -> None:
        """The far end echoed mark ``name``: everything up to it was played (or cleared)."""
        if self.schedule.echo(name, now):
            self._prune()

    def heard(self, now: float) -> Heard | None:
        """What the caller has heard of the item playing now (None: nothing of it).

        See :meth:`bridge.schedule.Schedule.heard` for how it is read off the schedule.
        """
        if self.schedule.settle(now):
            self._prune()
        if not self._items:
            return None
        return self.schedule.heard(self._items[0], now)

    def clear(self, now: float) -> Heard | None:
        """Barge-in: forget all queued and released audio; return what was heard.

        Every item known now is dropped (later pushes for it are discarded); marks
        released so far will come back as "cleared" and are ignored. New items play
        normally. The caller sends Twilio's ``clear`` itself.
        """
        heard = self.heard(now)
        for item in self._items:
            self._dropped.add(item.item_id)
            self._retire(item)
        self._items.clear()
        self._release.clear()
        self._by_id.clear()
        self.schedule.clear(now)
        return heard

    # -- state ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Audio is queued here, or released and not yet echoed."""
        return self.schedule.in_flight or any(item.pending for item in self._release)

    @property
    def dropped(self) -> Collection[str]:
        """The latest items whose further audio is discarded (dropped or cleared)."""
        return self._dropped

    def played_ms(self, item_id: str) -> float:
        """Playback of ``item_id`` confirmed by echoed marks (0.0 if unknown)."""
        item = self._by_id.get(item_id)
        if item is not None:
            return item.played / self.bytes_per_ms
        return self._played.get(item_id) or 0.0

    # -- internals -----------------------------------------------------------------------

    def _next_chunk(self) -> tuple[PlayoutItem, int, bool] | None:
        """The next chunk to release: (item, bytes, full) or None if none is ready."""
        while self._release:
            item = self._release[0]
            frames = item.pending // self.frame_bytes
            if frames == 0:
                if item.ended:
                    self._release.popleft()
                    continue
                return None
            count = min(frames, self._chunk_frames)
            return item, count * self.frame_bytes, item.ended or count == self._chunk_frames
        return None

    def _end(self, item: PlayoutItem) -> None:
        partial = item.pending % self.frame_bytes
        if partial:
            item.buf += self._silence * (self.frame_bytes - partial)
        item.ended = True

    def _prune(self) -> None:
        while self._release and self._release[0].ended and not self._release[0].pending:
            self._release.popleft()
        while self._items:
            item = self._items[0]
            if not item.ended or item.pending or item.outstanding:
                break
            self._items.popleft()
            del self._by_id[item.item_id]
            self._retire(item)

    def _retire(self, item: PlayoutItem) -> None:
        self._played.put(item.item_id, item.played / self.bytes_per_ms)
