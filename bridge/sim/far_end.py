"""Twilio's side of a bidirectional Media Stream, as seen by the bridge: sans-I/O.

Owns two things and nothing else:

* ``parse_outbound`` — strict validation of what the bridge sends on the stream. Twilio
  accepts only text frames holding exactly ``media`` {event, streamSid, media{payload}},
  ``mark`` {event, streamSid, mark{name}} or ``clear`` {event, streamSid}; anything else is
  a 31950 (binary) or 31951 (invalid) warning and the message is not acted upon.
  https://www.twilio.com/docs/voice/media-streams/websocket-messages
* ``FarEnd`` — the outbound playback buffer: audio is queued and played in order at the
  real-time rate from the moment it arrives; a mark is echoed when the audio queued
  before it has finished playing (at once when nothing is queued); ``clear`` drops the
  queued audio and echoes every pending mark at once. Time is injected (``now``, seconds,
  monotonic); every position is an integer sample count, so playback is sample-accurate.

Mark names follow the bridge's ``f"{seq}:{item_id}"`` convention; the far end attributes
each played sample to the item of the next mark queued after it, which gives per-item
"truly played" figures for tests. It never touches sockets or the clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import deque
from dataclasses import dataclass

from bridge.sim.errors import TwilioWouldReject
from bridge.sim.result import item_of_mark
from bridge.sim.ulaw import MULAW_SILENCE

__all__ = [
    "FarEnd",
    "OutClear",
    "OutMark",
    "OutMedia",
    "Outbound",
    "parse_outbound",
]


@dataclass(frozen=True)
class OutMedia:
    payload: bytes  # raw μ-law 8 kHz


@dataclass(frozen=True)
class OutMark:
    name: str


@dataclass(frozen=True)
class OutClear:
    pass


Outbound = OutMedia | OutMark | OutClear

_FIELDS = {
    "media": {"event", "streamSid", "media"},
    "mark": {"event", "streamSid", "mark"},
    "clear": {"event", "streamSid"},
}


def parse_outbound(message: str | bytes, stream_sid: str | None) -> Outbound:
    """Validate one message from the bridge the way Twilio would, and parse it.

    ``stream_sid`` is the stream's SID (None: any string is accepted). Raises
    ``TwilioWouldReject`` with a plain reason.
    """
    if not isinstance(message, str):
        raise TwilioWouldReject("binary frame (Twilio accepts text frames only)", code=31950)
    try:
        data = json.loads(message)
    except ValueError:
        raise TwilioWouldReject(f"not JSON: {message[:60]!r}") from None
    if not isinstance(data, dict):
        raise TwilioWouldReject(f"not a JSON object: {type(data).__name__}")
    event = data.get("event")
    if not isinstance(event, str):
        raise TwilioWouldReject("missing or non-string 'event'")
    expected = _FIELDS.get(event)
    if expected is None:
        raise TwilioWouldReject(f"unknown event {event!r} (only media, mark, clear)")
    keys = set(data)
    if keys != expected:
        raise TwilioWouldReject(_field_diff(event, keys, expected))
    sid = data["streamSid"]
    if not isinstance(sid, str):
        raise TwilioWouldReject(f"{event}: streamSid is not a string")
    if stream_sid is not None and sid != stream_sid:
        raise TwilioWouldReject(f"{event}: streamSid {sid!r} is not this stream's")
    match event:
        case "media":
            return OutMedia(_payload(data["media"]))
        case "mark":
            body = data["mark"]
            if not isinstance(body, dict) or set(body) != {"name"}:
                raise TwilioWouldReject(f"mark: 'mark' must be exactly {{name}}, got {body!r}")
            if not isinstance(body["name"], str):
                raise TwilioWouldReject("mark: mark.name is not a string")
            return OutMark(body["name"])
        case _:
            return OutClear()


def _field_diff(event: str, keys: set[str], expected: set[str]) -> str:
    parts = []
    if missing := expected - keys:
        parts.append(f"missing {sorted(missing)}")
    if extra := keys - expected:
        parts.append(f"unexpected {sorted(extra)}")
    return f"{event}: " + ", ".join(parts)


def _payload(body: object) -> bytes:
    if not isinstance(body, dict) or set(body) != {"payload"}:
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise TwilioWouldReject(f"media: 'media' must be exactly {{payload}}, got {keys}")
    text = body["payload"]
    if not isinstance(text, str):
        raise TwilioWouldReject("media: media.payload is not a string")
    try:
        audio = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TwilioWouldReject("media: media.payload is not valid base64") from None
    if not audio:
        raise TwilioWouldReject("media: empty payload")
    return audio


class _Group:
    """The audio queued between two marks; it belongs to the item of the closing mark."""

    __slots__ = ("item", "pending")

    def __init__(self) -> None:
        self.item: str | None = None
        self.pending = 0  # samples played before the item was known


class _Audio:
    __slots__ = ("data", "group", "offset")

    def __init__(self, data: bytes, group: _Group) -> None:
        self.data = data
        self.offset = 0
        self.group = group


class FarEnd:
    """Twilio's outbound playback with an injected clock.

    The clock's zero is the ``now`` of the first call (or ``start``). ``advance`` returns
    the far end's audio for the elapsed interval, silence (0xFF) where nothing played, so
    concatenating everything ``advance`` returns gives what the caller heard, sample by
    sample from the zero. ``media``/``mark``/``clear`` first play up to ``now``.
    """

    def __init__(
        self, rate: int = 8000, *, stream_sid: str | None = None, start: float | None = None
    ) -> None:
        self.rate = rate
        self.stream_sid = stream_sid
        self._origin = start
        self._pos = 0  # samples of far-end time simulated so far
        self._queue: deque[_Audio | str] = deque()
        self._open = _Group()
        self._last_group: _Group | None = None
        self._out = bytearray()
        self._reached: list[str] = []
        self._played: dict[str, int] = {}
        self._queued = 0  # samples of audio in the queue
        self.unattributed_samples = 0  # played audio whose item was never named by a mark
        self.dropped_samples = 0
        self.marks_played: list[str] = []
        self.marks_cleared: list[str] = []

    # -- what the bridge sends -------------------------------------------------------

    def accept(self, text: str | bytes) -> None:
        """Raise ``TwilioWouldReject`` if Twilio would not take this message."""
        parse_outbound(text, self.stream_sid)

    def media(self, payload: bytes, now: float) -> None:
        self._run(now)
        if payload:
            self._queue.append(_Audio(bytes(payload), self._open))
            self._queued += len(payload)

    def mark(self, name: str, now: float) -> None:
        self._run(now)
        group = self._open
        group.item = item_of_mark(name)
        if group.pending:
            self._played[group.item] = self._played.get(group.item, 0) + group.pending
            group.pending = 0
        self._open = _Group()
        self._queue.append(name)
        self._run(now)  # a mark with nothing queued before it is reached now

    def clear(self, now: float) -> list[str]:
        """Drop queued audio; return every mark owed to the bridge, in order.

        That is the marks reached but not yet returned by ``advance``, then every mark
        still queued (echoed although its audio never played).
        """
        self._run(now)
        names, self._reached = self._reached, []
        for entry in self._queue:
            if isinstance(entry, str):
                names.append(entry)
                self.marks_cleared.append(entry)
            else:
                self.dropped_samples += len(entry.data) - entry.offset
        self._queue.clear()
        self._queued = 0
        self._close_open_group()
        return names

    def advance(self, now: float) -> tuple[bytes, list[str]]:
        """Play up to ``now``: (audio since the last call, marks reached, to be echoed)."""
        self._run(now)
        audio, self._out = bytes(self._out), bytearray()
        marks, self._reached = self._reached, []
        return audio, marks

    # -- accounting ------------------------------------------------------------------

    def played_ms(self, item_id: str) -> float:
        """How much of an item's audio has truly played (ms, sample-accurate)."""
        return self._played.get(item_id, 0) * 1000.0 / self.rate

    def played_items(self) -> dict[str, float]:
        return {item: n * 1000.0 / self.rate for item, n in self._played.items()}

    def current_item(self) -> str | None:
        """The item playing now: that of the first queued audio; when nothing is queued,
        that of the audio played last. None if unknown (its mark has not arrived)."""
        for entry in self._queue:
            if not isinstance(entry, str):
                return entry.group.item
        return self._last_group.item if self._last_group is not None else None

    @property
    def queued_ms(self) -> float:
        return self._queued * 1000.0 / self.rate

    def next_mark_due(self) -> float | None:
        """When (clock time) the next queued mark will be reached; None if none is queued."""
        if self._origin is None:
            return None
        ahead = 0
        for entry in self._queue:
            if isinstance(entry, str):
                return self._origin + (self._pos + ahead) / self.rate
            ahead += len(entry.data) - entry.offset
        return None

    # -- playback --------------------------------------------------------------------

    def _sample_at(self, now: float) -> int:
        if self._origin is None:
            self._origin = now
        return max(self._pos, math.floor((now - self._origin) * self.rate + 1e-6))

    def _run(self, now: float) -> None:
        target = self._sample_at(now)
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, str):
                queue.popleft()
                self._reached.append(head)
                self.marks_played.append(head)
                continue
            if self._pos >= target:
                return
            n = min(len(head.data) - head.offset, target - self._pos)
            self._out += head.data[head.offset : head.offset + n]
            head.offset += n
            self._pos += n
            self._queued -= n
            self._credit(head.group, n)
            if head.offset == len(head.data):
                queue.popleft()
        if self._pos < target:  # underrun: the caller hears silence until audio arrives
            self._out += bytes([MULAW_SILENCE]) * (target - self._pos)
            self._pos = target

    def _credit(self, group: _Group, n: int) -> None:
        self._last_group = group
        if group.item is None:
            group.pending += n
        else:
            self._played[group.item] = self._played.get(group.item, 0) + n

    def _close_open_group(self) -> None:
        # Audio cleared before its mark was sent never gets an item.
        self.unattributed_samples += self._open.pending
        self._open.pending = 0
        self._open = _Group()
