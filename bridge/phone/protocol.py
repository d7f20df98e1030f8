"""Twilio Media Streams (bidirectional ``<Connect><Stream>``), sans-I/O.

Owns the wire format of one stream: parsing every message Twilio sends into a frozen
dataclass, mapping those the call needs onto the typed leg inputs (:func:`leg_input`:
``media`` -> ``CallerAudio``, ``mark`` -> ``FarEndMark``, ``dtmf`` -> ``Dtmf``, ``stop`` ->
``HangUp``), and building the only three messages we may send back (``media``, ``mark``,
``clear``). It never touches a socket, a clock, the Call or the audio itself: the I/O
shell feeds it text/binary frames, hands the inputs to the runner and writes out the
strings it builds.

Protocol reference: https://www.twilio.com/docs/voice/media-streams/websocket-messages

Inbound (every message but ``connected`` also carries ``sequenceNumber`` (string) and
``streamSid``)::

    connected  protocol, version
    start      start.{streamSid, accountSid, callSid, tracks[], customParameters{},
               mediaFormat{encoding "audio/x-mulaw", sampleRate 8000, channels 1}}
    media      media.{track, chunk (str), timestamp (str, ms), payload (base64 mu-law)}
    dtmf       dtmf.{track "inbound_track", digit}
    mark       mark.name             (echo of a mark we sent: played, or cleared)
    stop       stop.{accountSid, callSid}

Outbound, exactly these fields and nothing else (extra or missing fields, binary frames
or a wrong streamSid make Twilio drop the stream with error 31950/31951)::

    {"event":"media","streamSid":…,"media":{"payload":<base64>}}
    {"event":"mark","streamSid":…,"mark":{"name":…}}
    {"event":"clear","streamSid":…}

Rejections raise :class:`~bridge.errors.PhoneProtocolError` whose message is the plain
reason; ``fatal`` tells the shell whether to close the call or drop the frame:

=====================================================  ======  ============================
what arrived                                           fatal   why
=====================================================  ======  ============================
binary frame                                           no      Twilio only sends text
message over ``max_message_bytes``                     no      never parsed; one frame lost
not JSON / not a JSON object / no ``event`` string     no      one frame lost
unknown ``event``                                      no      forward compatible
missing/ill-typed ``sequenceNumber`` or ``streamSid``  no      one frame lost
``connected`` after ``start``; anything after ``stop`` no      stray frame
``start`` malformed (any field missing/ill-typed)      yes     the call cannot be set up
``start`` mediaFormat not audio/x-mulaw 8000 mono      yes     we would play/decode garbage
second ``start``                                       yes     the stream is confused
``media``/``dtmf``/``mark`` before ``start``           no      nothing to attach it to
wrong ``streamSid``                                    no      not this stream's frame
``media`` ill-typed field, bad track, bad chunk/ts     no      one 20 ms frame lost
``media`` payload invalid base64 or empty              no      one 20 ms frame lost
``dtmf``/``mark``/``stop`` ill-typed or missing field  no      one frame lost
=====================================================  ======  ============================

A ``stop`` is returned as :class:`Stop` (the shell ends the call); it is accepted even
before ``start`` so a stream that never started still ends cleanly. A stream whose
``start`` never arrives is the shell's business (a start timeout), not this module's.

Hot path: a ``media`` message is parsed with one ``orjson.loads`` plus a few dict lookups and
one strict base64 decode; no pydantic, no regexes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

from bridge import b64, inputs
from bridge.errors import PhoneProtocolError

__all__ = [
    "HANGUP_REASON",
    "Connected",
    "Dtmf",
    "Event",
    "Mark",
    "Media",
    "MediaStream",
    "Start",
    "Stop",
    "leg_input",
]

MULAW_ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
CHANNELS = 1
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_MEDIA_TRACKS = frozenset(("inbound", "outbound"))


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Media:
    track: str
    chunk: int
    timestamp: int  # ms since the stream started
    payload: bytes  # raw mu-law 8 kHz


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


Event = Connected | Start | Media | Dtmf | Mark | Stop

# Twilio's ``stop`` also follows a transfer (``<Dial>``): for this call's stream it is the end.
HANGUP_REASON = "caller hung up"


def leg_input(event: Event) -> inputs.LegInput | None:
    """What ``event`` means to the call (None: nothing, e.g. ``connected`` or ``start``)."""
    match event:
        case Media(payload=payload, timestamp=timestamp):
            return inputs.CallerAudio(payload, timestamp)
        case Mark(name=name):
            return inputs.FarEndMark(name)
        case Dtmf(digit=digit):
            return inputs.Dtmf(digit)
        case Stop():
            return inputs.HangUp(HANGUP_REASON)
        case _:
            return None


def _drop(reason: str) -> PhoneProtocolError:
    return PhoneProtocolError(reason, fatal=False)


def _fatal(reason: str) -> PhoneProtocolError:
    return PhoneProtocolError(reason, fatal=True)


def _show(value: object) -> str:
    """A short, log-safe rendering of an unexpected value."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _digits(value: object, field: str) -> int:
    # Twilio sends numbers in media as decimal strings ("chunk": "1"); int() alone would
    # also take " 1", "+1", "1_0" or non-ASCII digits, and raise ValueError past 4300 digits.
    if type(value) is not str or not value.isascii() or not value.isdigit() or len(value) > 18:
        raise _drop(f"{field} must be a decimal string, got {_show(value)}")
    return int(value)


class MediaStream:
    """One Twilio media stream: parse what Twilio sends, build what we send.

    ``receive()`` returns one :data:`Event` per accepted message or raises
    :class:`PhoneProtocolError`. After ``start``, ``stream_sid``, ``call_sid`` and ``start``
    are set and the builders can be used.
    """

    def __init__(self, max_message_bytes: int = 65536) -> None:
        self.max_message_bytes = max_message_bytes
        self.start: Start | None = None
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.stopped = False
        self._media_head = ""
        self._mark_head = ""
        self._clear = ""

    # -- inbound -------------------------------------------------------------------------

    def receive(self, message: str | bytes) -> Event:
        """Parse one WebSocket message from Twilio."""
        if type(message) is not str:
            raise _drop("binary frame (Twilio sends text frames only)")
        size = len(message)
        if size > self.max_message_bytes or (
            not message.isascii()
            and (size := len(message.encode("utf-8", "surrogatepass"))) > self.max_message_bytes
        ):
            raise _drop(f"message of {size} bytes exceeds {self.max_message_bytes}")
        try:
            data = orjson.loads(message)
        except ValueError:  # orjson.JSONDecodeError, nesting too deep included
            raise _drop("not JSON") from None
        if type(data) is not dict:
            raise _drop("not a JSON object")
        event = data.get("event")
        if type(event) is not str:
            raise _drop("missing event")
        if self.stopped:
            raise _drop(f"{event} after stop")

        if event == "connected":
            return self._connected(data)
        if event not in ("media", "mark", "dtmf", "start", "stop"):
            raise _drop(f"unknown event {_show(event)}")

        fatal = event == "start"
        seq = data.get("sequenceNumber")
        if type(seq) is not str or not seq.isascii() or not seq.isdigit():
            raise PhoneProtocolError(
                f"{event}: sequenceNumber must be a decimal string, got {_show(seq)}", fatal=fatal
            )
        sid = data.get("streamSid")
        if type(sid) is not str or not sid:
            raise PhoneProtocolError(f"{event}: missing streamSid", fatal=fatal)

        match event:
            case "start":
                return self._start(data, sid)
            case "stop":
                return self._stop(data, sid)
        if self.stream_sid is None:
            raise _drop(f"{event} before start")
        if sid != self.stream_sid:
            raise _drop(f"{event}: wrong streamSid")
        match event:
            case "media":
                return self._media(data)
            case "mark":
                return self._mark(data)
            case _:
                return self._dtmf(data)

    def _connected(self, data: dict[str, object]) -> Connected:
        if self.start is not None:
            raise _drop("connected after start")
        protocol = data.get("protocol")
        version = data.get("version")
        if type(protocol) is not str or type(version) is not str:
            raise _drop("connected: protocol and version must be strings")
        return Connected(protocol, version)

    def _start(self, data: dict[str, object], sid: str) -> Start:
        if self.start is not None:
            raise _fatal("second start")
        body = data.get("start")
        if type(body) is not dict:
            raise _fatal("start: missing start object")
        stream_sid = body.get("streamSid")
        call_sid = body.get("callSid")
        account_sid = body.get("accountSid")
        for name, value in (
            ("streamSid", stream_sid),
            ("callSid", call_sid),
            ("accountSid", account_sid),
        ):
            if type(value) is not str or not value:
                raise _fatal(f"start: {name} must be a non-empty string")
        assert isinstance(stream_sid, str) and isinstance(call_sid, str)
        assert isinstance(account_sid, str)
        if stream_sid != sid:
            raise _fatal("start: start.streamSid differs from streamSid")
        tracks = body.get("tracks")
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            raise _fatal("start: tracks must be a list of strings")
        params = body.get("customParameters", {})
        if type(params) is not dict or not all(type(v) is str for v in params.values()):
            raise _fatal("start: customParameters must map names to strings")
        fmt = body.get("mediaFormat")
        if type(fmt) is not dict:
            raise _fatal("start: missing mediaFormat")
        encoding = fmt.get("encoding")
        rate = fmt.get("sampleRate")
        channels = fmt.get("channels")
        if (
            encoding != MULAW_ENCODING
            or type(rate) is not int
            or rate != SAMPLE_RATE
            or type(channels) is not int
            or channels != CHANNELS
        ):
            raise _fatal(
                f"start: mediaFormat must be {MULAW_ENCODING} {SAMPLE_RATE} Hz mono, got "
                f"{_show(encoding)} {_show(rate)} Hz x{_show(channels)}"
            )
        start = Start(
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=account_sid,
            tracks=tuple(tracks),
            custom_parameters=dict(params),
            encoding=MULAW_ENCODING,
            sample_rate=SAMPLE_RATE,
            channels=CHANNELS,
        )
        self.start = start
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        quoted = json.dumps(stream_sid)
        self._media_head = '{"event":"media","streamSid":' + quoted + ',"media":{"payload":"'
        self._mark_head = '{"event":"mark","streamSid":' + quoted + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + quoted + "}"
        return start

    def _media(self, data: dict[str, object]) -> Media:
        body = data.get("media")
        if type(body) is not dict:
            raise _drop("media: missing media object")
        track = body.get("track")
        if type(track) is not str or track not in _MEDIA_TRACKS:  # a list is unhashable
            raise _drop(f"media: unknown track {_show(track)}")
        chunk = _digits(body.get("chunk"), "media.chunk")
        timestamp = _digits(body.get("timestamp"), "media.timestamp")
        encoded = body.get("payload")
        if type(encoded) is not str:
            raise _drop("media: payload must be a base64 string")
        try:
            payload = b64.decode(encoded)
        except ValueError:
            raise _drop("media: payload is not valid base64") from None
        if not payload:
            # mu-law is one byte per sample: anything decodable and non-empty is whole samples.
            raise _drop("media: empty payload")
        assert isinstance(track, str)
        return Media(track, chunk, timestamp, payload)

    def _mark(self, data: dict[str, object]) -> Mark:
        body = data.get("mark")
        if type(body) is not dict:
            raise _drop("mark: missing mark object")
        name = body.get("name")
        if type(name) is not str:
            raise _drop("mark: name must be a string")
        return Mark(name)

    def _dtmf(self, data: dict[str, object]) -> Dtmf:
        body = data.get("dtmf")
        if type(body) is not dict:
            raise _drop("dtmf: missing dtmf object")
        if type(body.get("track")) is not str:
            raise _drop("dtmf: track must be a string")
        digit = body.get("digit")
        if type(digit) is not str or digit not in _DTMF_DIGITS:
            raise _drop(f"dtmf: not a DTMF digit: {_show(digit)}")
        return Dtmf(digit)

    def _stop(self, data: dict[str, object], sid: str) -> Stop:
        if self.stream_sid is not None and sid != self.stream_sid:
            raise _drop("stop: wrong streamSid")
        body = data.get("stop")
        if type(body) is not dict:
            raise _drop("stop: missing stop object")
        call_sid = body.get("callSid")
        if type(call_sid) is not str or type(body.get("accountSid")) is not str:
            raise _drop("stop: callSid and accountSid must be strings")
        if self.call_sid is not None and call_sid != self.call_sid:
            raise _drop("stop: callSid differs from start")
        self.stopped = True
        return Stop(call_sid)

    # -- outbound ------------------------------------------------------------------------

    def _require_start(self, what: str) -> None:
        if self.stream_sid is None:
            # Local misuse; Twilio would drop a stream message without its streamSid.
            raise _fatal(f"cannot send {what} before start")

    def media(self, payload: bytes) -> str:
        """``media`` message playing ``payload`` (raw mu-law 8 kHz, no header)."""
        self._require_start("media")
        if not payload:
            raise _fatal("cannot send an empty media payload")
        return self._media_head + b64.encode(payload) + '"}}'

    def mark(self, name: str) -> str:
        """``mark`` message; Twilio echoes it once the audio sent before it has played."""
        self._require_start("mark")
        if not name:
            raise _fatal("cannot send a mark without a name")
        return self._mark_head + json.dumps(name, ensure_ascii=False) + "}}"

    def clear(self) -> str:
        """``clear`` message: Twilio drops queued audio and echoes every pending mark."""
        self._require_start("clear")
        return self._clear
