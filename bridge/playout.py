"""Paced playout and mark accounting for one phone leg, sans-I/O.

Owns the answer to two questions during a call: *what should we send to the far end
now*, and *how much of the assistant's current item has the caller actually heard*.
It works in leg-format bytes (mu-law 8 kHz, or PCM16 at the leg rate) and never touches
sockets, codecs, the model protocol or the wall clock: time comes in as ``now``
(seconds, monotonic).

Why pace at all: the model sends audio faster than real time and Twilio queues whatever
it gets (minutes of it). If we forwarded everything at once, a barge-in ``clear`` would
be our only lever and marks would tell us little. So only ``lead_ms`` of audio is kept
buffered at the far end; the rest waits here and is released as playback progresses,
in whole frames, in chunks of ``chunk_ms``, each chunk followed by a mark named
``f"{seq}:{item_id}"`` (``seq`` increases by one per chunk, never reused).

Far-end model (what ``pull``, ``next_due`` and ``heard`` assume):

* The far end plays released audio in order, in real time. A chunk starts playing at
  ``max(time the previous chunk ended, time it was released)``: if the far end ran dry,
  audio released later starts at its release time.
* An echoed mark for chunk ``k`` means chunks ``<= k`` ended, no later than the echo. An
  echo normally arrives one round trip after the modelled end; one that arrives more than
  ``_STALL_S`` later than the recent minimum round trip means the far end fell behind,
  and the schedule of later chunks is moved back to match.
* After ``clear`` Twilio echoes *every* pending mark at once: an echo means "played or
  cleared". Marks released before a ``clear`` (``seq <= cleared_upto``) are therefore
  ignored whenever they come back; they never count as played and never move the clock
  anchor.

Release rules (``pull``): items are released in push order, one item per chunk. A chunk
is ``chunk_ms`` of whole frames (an ended item's last chunk may be shorter) and goes out
once the modelled far-end buffer plus the chunk fits in ``lead_ms``. A shorter chunk of
an item that is still streaming (fewer whole frames than a chunk are queued) waits until
the far end is down to ``chunk_ms``: fewer, larger messages while the model keeps up,
no gap when it does not. Bytes short of a whole frame wait for more audio or for
``end_item``. ``next_due`` is the time this rule will next release something.

Item position (ms) = leg bytes released for that item / ``bytes_per_ms``; the last
partial frame of an item is padded with silence by ``end_item``, so positions may run
a little past what the model sent: ``heard()`` caps them at ``model_ms``.

Protocol reference: https://www.twilio.com/docs/voice/media-streams/websocket-messages
(``mark`` / ``clear``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ClearPlayback", "Heard", "PhoneOut", "Playout", "SendAudio", "SendMark", "item_of_mark"]

logger = logging.getLogger(__name__)

_EPS_MS = 1e-3  # float slack when comparing buffered durations
_HISTORY = 256  # dropped item ids / played_ms of retired items kept per call
_COMPACT_BYTES = 4096
_LAG_WINDOW = 16  # echoes over which the base round trip is the minimum lag
_STALL_S = 0.05  # an echo this much later than the base round trip means the far end lags


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


@dataclass(frozen=True, slots=True)
class Heard:
    item_id: str
    content_index: int
    ms: int  # what the caller heard of the item, floor, <= model_ms


@dataclass(slots=True, eq=False)
class _Item:
    item_id: str
    content_index: int
    model_ms: float = 0.0
    ended: bool = False
    released: int = 0  # leg bytes released to the far end
    played: int = 0  # leg bytes confirmed played by echoed marks
    outstanding: int = 0  # released chunks not echoed yet
    read: int = 0  # offset of the first unreleased byte in buf
    buf: bytearray = field(default_factory=bytearray)

    @property
    def pending(self) -> int:
        return len(self.buf) - self.read


@dataclass(slots=True, eq=False)
class _Chunk:
    seq: int
    item: _Item
    start: int  # item byte offsets [start, end)
    end: int
    released_at: float  # s
    play_at: float  # modelled start of playback at the far end, s
    duration_ms: float


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
        self._items: deque[_Item] = deque()  # play order; every item not completely played
        self._release: deque[_Item] = deque()  # items with audio still to release
        self._by_id: dict[str, _Item] = {}
        self._chunks: deque[_Chunk] = deque()  # released, not echoed; consecutive seqs
        self._seq = 0
        self._cleared_upto = 0
        # Recent (echo time - modelled end) of echoed chunks: the round trip, plus jitter.
        self._lags: deque[float] = deque(maxlen=_LAG_WINDOW)
        self._free_at = -math.inf  # when the far end will have played all it was given
        self._dropped: dict[str, None] = {}
        self._history: dict[str, float] = {}

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
            item = _Item(item_id, content_index)
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
        self._remember_dropped(item_id)
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
        while (step := self._next_chunk()) is not None:
            item, size, full = step
            duration_ms = size / self.bytes_per_ms
            ahead_ms = (self._free_at - now) * 1000.0 if self._free_at > now else 0.0
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
            self._seq += 1
            play_at = max(now, self._free_at)
            self._chunks.append(
                _Chunk(
                    self._seq, item, item.released, item.released + size, now, play_at, duration_ms
                )
            )
            item.released += size
            item.outstanding += 1
            self._free_at = play_at + duration_ms / 1000.0
            out.append(SendAudio(payload))
            out.append(SendMark(mark_name(self._seq, item.item_id)))
        return out

    def next_due(self, now: float) -> float | None:
        """When :meth:`pull` will next release something (None: waiting for audio).

        Valid until the next push/end_item/drop_item/clear/on_mark.
        """
        step = self._next_chunk()
        if step is None:
            return None
        _, size, full = step
        duration_ms = size / self.bytes_per_ms
        threshold_ms = self.lead_ms - duration_ms
        if not full:
            threshold_ms = min(threshold_ms, self.chunk_ms)
        return max(now, self._free_at - threshold_ms / 1000.0)

    # -- feedback from the far end -------------------------------------------------------

    def on_mark(self, name: str, now: float) -> None:
        """The far end echoed mark ``name``: everything up to it was played (or cleared)."""
        seq_text, sep, item_id = name.partition(":")
        if not sep or not seq_text.isascii() or not seq_text.isdigit():
            logger.debug("mark %r is not ours, ignored", name)
            return
        seq = int(seq_text)
        chunks = self._chunks
        if not chunks or seq < chunks[0].seq:
            if seq <= self._cleared_upto:
                logger.debug("mark %s echoed after clear, not counted as played", name)
            elif seq <= self._seq:
                logger.debug("mark %s echoed twice, ignored", name)
            else:
                logger.debug("unknown mark %s ignored", name)
            return
        index = seq - chunks[0].seq
        if index >= len(chunks) or chunks[index].item.item_id != item_id:
            logger.debug("unknown mark %s ignored", name)
            return
        # Twilio plays in order: an echo for chunk k means every chunk before it ended too.
        for _ in range(index + 1):
            chunk = chunks.popleft()
            chunk.item.played = chunk.end
            chunk.item.outstanding -= 1
        lag = now - (chunk.play_at + chunk.duration_ms / 1000.0)
        self._lags.append(lag)
        base = min(self._lags)
        if lag > base + _STALL_S:
            # The far end fell behind the schedule (audio reached it late, or it stalled),
            # by more than echo jitter explains: move the rest of the schedule back.
            free_at = now - base
            for chunk in chunks:
                chunk.play_at = max(free_at, chunk.released_at)
                free_at = chunk.play_at + chunk.duration_ms / 1000.0
            self._free_at = free_at
        self._prune()

    def heard(self, now: float) -> Heard | None:
        """What the caller has heard of the item playing now (None: nothing of it).

        Read off the playback schedule: each released chunk plays from ``play_at`` (its
        release, or the end of the chunk before it) in real time, capped at its end and at
        ``model_ms``, never below what echoed marks confirmed. The schedule counts from
        our release, not from the far end's: the delay toward Twilio shifts its playback
        and our ``clear`` alike, so it cancels out, and the echo's way back (which would
        make an echo-anchored estimate lag by the return delay) plays no part. Echoes
        re-anchor the schedule only when the far end really fell behind (``on_mark``).
        """
        if not self._items:
            return None
        # The item playing now is that of the latest chunk to have started: at an item
        # boundary the next item may be playing before the last one's echoes are back.
        item = self._items[0]
        position_ms = item.played / self.bytes_per_ms
        for chunk in self._chunks:
            if now <= chunk.play_at:
                break
            if chunk.item is not item:
                item = chunk.item
                position_ms = item.played / self.bytes_per_ms
            position_ms = max(
                position_ms,
                chunk.start / self.bytes_per_ms
                + min((now - chunk.play_at) * 1000.0, chunk.duration_ms),
            )
        # Floor, forgiving float dust (19.9999999 is 20), but never above model_ms.
        ms = int(min(position_ms, item.model_ms) + 1e-6)
        if ms > item.model_ms:
            ms -= 1
        if ms <= 0:
            return None
        return Heard(item.item_id, item.content_index, ms)

    def clear(self, now: float) -> Heard | None:
        """Barge-in: forget all queued and released audio; return what was heard.

        Every item known now is dropped (later pushes for it are discarded); marks
        released so far will come back as "cleared" and are ignored. New items play
        normally. The caller sends Twilio's ``clear`` itself.
        """
        heard = self.heard(now)
        for item in self._items:
            self._remember_dropped(item.item_id)
            self._retire(item)
        self._items.clear()
        self._release.clear()
        self._by_id.clear()
        self._chunks.clear()
        self._cleared_upto = self._seq
        self._free_at = now
        return heard

    # -- state ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Audio is queued here, or released and not yet echoed."""
        return bool(self._chunks) or any(item.pending for item in self._release)

    def played_ms(self, item_id: str) -> float:
        """Playback of ``item_id`` confirmed by echoed marks (0.0 if unknown)."""
        item = self._by_id.get(item_id)
        if item is not None:
            return item.played / self.bytes_per_ms
        return self._history.get(item_id, 0.0)

    def buffered_ms(self, now: float) -> float:
        """Estimated audio released to the far end and not yet played."""
        return max(0.0, (self._free_at - now) * 1000.0)

    # -- internals -----------------------------------------------------------------------

    def _next_chunk(self) -> tuple[_Item, int, bool] | None:
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

    def _end(self, item: _Item) -> None:
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

    def _retire(self, item: _Item) -> None:
        self._history[item.item_id] = item.played / self.bytes_per_ms
        if len(self._history) > _HISTORY:
            del self._history[next(iter(self._history))]

    def _remember_dropped(self, item_id: str) -> None:
        self._dropped[item_id] = None
        if len(self._dropped) > _HISTORY:
            del self._dropped[next(iter(self._dropped))]


def mark_name(seq: int, item_id: str) -> str:
    """The name of the mark that closes chunk ``seq`` of ``item_id``."""
    return f"{seq}:{item_id}"


def item_of_mark(name: str) -> str | None:
    """The item id in a mark name made by :func:`mark_name` (None: not one of ours)."""
    seq, sep, item = name.partition(":")
    return item if sep and seq.isdigit() else None
