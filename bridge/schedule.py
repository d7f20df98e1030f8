"""The far end's playback schedule and mark accounting, sans-I/O.

Owns what happens to assistant audio once ``bridge.playout`` has released it: every chunk
on its way through the far end, when the far end is modelled to play it, the mark that
closes it, what echoed marks confirm, and from that, what the caller has heard. Mark names
are made and parsed here and nowhere else in the bridge (the simulator,
``bridge/sim/result.py``, parses them on its own on purpose: it is an independent check).

It must not touch the audio still queued or decide what to release and when (that is
``bridge.playout``), nor codecs, sockets, the model protocol or the wall clock: time comes
in as ``now`` (seconds, monotonic). It only updates the ``played`` / ``outstanding`` /
``released`` counts of the items it is handed.

Far-end model (what the playout's ``pull``/``next_due`` and :meth:`Schedule.heard` assume):

* The far end plays released audio in order, in real time. A chunk starts playing at
  ``max(time the previous chunk ended, time it was released)``: if the far end ran dry,
  audio released later starts at its release time.
* An echoed mark for chunk ``k`` means chunks ``<= k`` ended, no later than the echo. An
  echo normally arrives one round trip after the modelled end; one that arrives more than
  ``_STALL_S`` later than the recent minimum round trip means the far end fell behind,
  and the schedule of later chunks is moved back to match.
* A far end that never echoes (``echoes_marks=False``: Socket.IO voice clients) is taken
  to play exactly as modelled: each chunk counts as played at its modelled end
  (:meth:`Schedule.settle`), and nothing can move the schedule back if it fell behind.
* After ``clear`` Twilio echoes *every* pending mark at once: an echo means "played or
  cleared". Marks released before a ``clear`` (``seq <= cleared_upto``) are therefore
  ignored whenever they come back; they never count as played and never move the clock
  anchor.

Item position (ms) = leg bytes released for that item / ``bytes_per_ms``; the last
partial frame of an item is padded with silence, so positions may run a little past what
the model sent: :meth:`Schedule.heard` caps them at ``model_ms``.

Protocol reference: https://www.twilio.com/docs/voice/media-streams/websocket-messages
(``mark`` / ``clear``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Heard", "PlayoutItem", "Schedule", "item_of_mark", "mark_name", "parse_mark"]

logger = logging.getLogger(__name__)

_LAG_WINDOW = 16  # echoes over which the base round trip is the minimum lag
_STALL_S = 0.05  # an echo this much later than the base round trip means the far end lags


@dataclass(frozen=True, slots=True)
class Heard:
    item_id: str
    content_index: int
    ms: int  # what the caller heard of the item, floor, <= model_ms


@dataclass(slots=True, eq=False)
class PlayoutItem:
    """One assistant item in the playout: its queued audio and how far it got."""

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
    item: PlayoutItem
    start: int  # item byte offsets [start, end)
    end: int
    released_at: float  # s
    play_at: float  # modelled start of playback at the far end, s
    duration_ms: float


def mark_name(seq: int, item_id: str) -> str:
    """The name of the mark that closes chunk ``seq`` of ``item_id``."""
    return f"{seq}:{item_id}"


def parse_mark(name: str) -> tuple[int, str] | None:
    """``(seq, item_id)`` of a name made by :func:`mark_name` (None: not one of ours)."""
    seq_text, sep, item_id = name.partition(":")
    if not sep or not seq_text.isascii() or not seq_text.isdigit():
        return None
    return int(seq_text), item_id


def item_of_mark(name: str) -> str | None:
    """The item id in a mark name made by :func:`mark_name` (None: not one of ours)."""
    parsed = parse_mark(name)
    return parsed[1] if parsed is not None else None


class Schedule:
    """Released chunks, in order, until their marks come back; the far end's clock."""

    def __init__(self, bytes_per_ms: float, *, echoes_marks: bool = True) -> None:
        self.bytes_per_ms = bytes_per_ms
        # False: the far end never echoes marks; a chunk counts as played at its modelled
        # end (:meth:`settle`), which is all the schedule can know of such a far end.
        self.echoes_marks = echoes_marks
        self._chunks: deque[_Chunk] = deque()  # released, not echoed; consecutive seqs
        self._seq = 0
        self._cleared_upto = 0
        # Recent (echo time - modelled end) of echoed chunks: the round trip, plus jitter.
        self._lags: deque[float] = deque(maxlen=_LAG_WINDOW)
        self.free_at = -math.inf  # when the far end will have played all it was given

    @property
    def in_flight(self) -> bool:
        """Chunks were released whose marks are not back yet."""
        return bool(self._chunks)

    def ahead_ms(self, now: float) -> float:
        """Audio released to the far end and not played yet, as modelled (ms)."""
        return (self.free_at - now) * 1000.0 if self.free_at > now else 0.0

    def release(self, item: PlayoutItem, size: int, now: float) -> str:
        """The next ``size`` bytes of ``item`` go out at ``now``; the name of their mark."""
        duration_ms = size / self.bytes_per_ms
        self._seq += 1
        play_at = max(now, self.free_at)
        start = item.released
        self._chunks.append(_Chunk(self._seq, item, start, start + size, now, play_at, duration_ms))
        item.released += size
        item.outstanding += 1
        self.free_at = play_at + duration_ms / 1000.0
        return mark_name(self._seq, item.item_id)

    def echo(self, name: str, now: float) -> bool:
        """The far end echoed mark ``name``; True if it confirmed playback of something."""
        parsed = parse_mark(name)
        if parsed is None:
            logger.debug("mark %r is not ours, ignored", name)
            return False
        seq, item_id = parsed
        chunks = self._chunks
        if not chunks or seq < chunks[0].seq:
            if seq <= self._cleared_upto:
                logger.debug("mark %s echoed after clear, not counted as played", name)
            elif seq <= self._seq:
                logger.debug("mark %s echoed twice, ignored", name)
            else:
                logger.debug("unknown mark %s ignored", name)
            return False
        index = seq - chunks[0].seq
        if index >= len(chunks) or chunks[index].item.item_id != item_id:
            logger.debug("unknown mark %s ignored", name)
            return False
        # Twilio plays in order: an echo for chunk k means every chunk before it ended too.
        for _ in range(index + 1):
            chunk = chunks.popleft()
            chunk.item.played = chunk.end
            chunk.item.outstanding -= 1
        lag = now - (chunk.play_at + chunk.duration_ms / 1000.0)
        if lag < 0:
            # Echoed before its modelled end: an earlier move (an echo held up on its way
            # back, read as a far end falling behind) overshot. The chunk ended by now, so
            # the rest plays from now; without this every later echo would look early, the
            # base round trip would go negative and each normal echo would move the
            # schedule again, leaving ``heard`` stuck tens of ms short.
            self._replan(now)
            lag = 0.0
        self._lags.append(lag)
        base = min(self._lags)
        if lag > base + _STALL_S:
            # The far end fell behind the schedule (audio reached it late, or it stalled),
            # by more than echo jitter explains: move the rest of the schedule back.
            self._replan(now - base)
        return True

    def settle(self, now: float) -> bool:
        """For a far end that does not echo marks: chunks whose modelled end has passed
        count as played, as an echo would have confirmed them. True if any did."""
        if self.echoes_marks:
            return False
        chunks = self._chunks
        settled = False
        while chunks and chunks[0].play_at + chunks[0].duration_ms / 1000.0 <= now:
            chunk = chunks.popleft()
            chunk.item.played = chunk.end
            chunk.item.outstanding -= 1
            settled = True
        return settled

    def next_end(self) -> float | None:
        """When :meth:`settle` will next have something to settle (None: never, or it
        waits for echoes)."""
        if self.echoes_marks or not self._chunks:
            return None
        first = self._chunks[0]
        return first.play_at + first.duration_ms / 1000.0

    def _replan(self, free_at: float) -> None:
        """Play the chunks still out from ``free_at`` on (never before their release)."""
        for chunk in self._chunks:
            chunk.play_at = max(free_at, chunk.released_at)
            free_at = chunk.play_at + chunk.duration_ms / 1000.0
        self.free_at = free_at

    def heard(self, first: PlayoutItem, now: float) -> Heard | None:
        """What the caller has heard of the item playing now; ``first`` is the oldest item
        not completely played.

        Read off the playback schedule: each released chunk plays from ``play_at`` (its
        release, or the end of the chunk before it) in real time, capped at its end and at
        ``model_ms``, never below what echoed marks confirmed. The schedule counts from
        our release, not from the far end's: the delay toward Twilio shifts its playback
        and our ``clear`` alike, so it cancels out, and the echo's way back (which would
        make an echo-anchored estimate lag by the return delay) plays no part. Echoes
        re-anchor the schedule only when the far end really fell behind (:meth:`echo`).
        """
        # The item playing now is that of the latest chunk to have started: at an item
        # boundary the next item may be playing before the last one's echoes are back.
        item = first
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

    def clear(self, now: float) -> None:
        """Forget every released chunk: their marks will come back as "cleared"."""
        self._chunks.clear()
        self._cleared_upto = self._seq
        self.free_at = now
