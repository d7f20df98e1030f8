"""The ``/chat/v1`` event API, sans-I/O: connect parameters, client events, replies.

The shape of Bolna-style voice gateways, so their browser clients work unchanged::

    const socket = io('http://server/chat/v1', { query: { agentId: 'support' } });

Client → server::

    audio  {data: base64 PCM16LE mono | binary attachment, meta_info: {sample_rate?, stream_sid?}}
           (or the bare binary attachment); sample_rate 8000, 16000, 24000 or 48000,
           16000 when absent
    text   {data: "…"}          a user message; the agent replies
    clear  (any payload)        stop the agent's speech (barge-in)

Server → client::

    status {state: "connected", session, agent, resume} ("resumed": true when it was)
    audio  {data: base64 PCM16LE, meta_info: {sample_rate, stream_sid, item_id}}
           at the rate of the client's latest audio (the session's until it sends some)
    text   {data, role: "user" | "assistant", final}
    clear  {}                   the caller talked over the agent: stop playback now
    error  {message, code}      a dropped message, or an agent-side problem

Connect parameters, from the ``auth`` object or the query: ``agentId`` (the default
agent when absent), ``token`` (``SOFTPHONE_TOKEN``; or ``Authorization: Bearer``),
``resume`` (an id the client picks at random and sends on every connect: a dropped
connection is then resumed within ``SOCKETIO_RESUME_GRACE_S``) and, an addition of this
bridge, ``sample_rate``: the session's rate before the client's first audio says it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge import b64, inputs
from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.softphone.protocol import MAX_TEXT_CHARS, Refused, resume_id

__all__ = [
    "DEFAULT_RATE",
    "NAMESPACE",
    "RATES",
    "AudioIn",
    "ChatConnect",
    "ClearIn",
    "ClientEvent",
    "TextIn",
    "audio_out",
    "error_out",
    "leg_input",
    "parse_client_event",
    "parse_connect",
    "text_out",
]

NAMESPACE = "/chat/v1"
RATES = (8000, 16000, 24000, 48000)
DEFAULT_RATE = 16000
MAX_STREAM_SID_CHARS = 128


@dataclass(frozen=True)
class ChatConnect:
    agent_name: str
    sample_rate: int
    resume: str | None


def parse_connect(fields: Mapping[str, str], settings: Settings) -> ChatConnect:
    """The agent and rate of a new session; ``Refused`` with a reason if there is none."""
    name = fields.get("agentId") or settings.default_agent
    if settings.agent(name) is None:
        raise Refused("unknown_agent", f"there is no agent named {name[:64]!r}")
    rate = _rate(fields.get("sample_rate"), DEFAULT_RATE)
    if rate is None:
        raise Refused("bad_sample_rate", f"sample_rate must be one of {_RATES_TEXT}")
    return ChatConnect(name, rate, resume_id(fields))


_RATES_TEXT = ", ".join(map(str, RATES))


def _rate(raw: object, default: int) -> int | None:
    """A rate from the list (ints, or short ASCII digits), ``default`` when absent."""
    if raw is None or raw == "":
        return default
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 6:
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in RATES:
        return raw
    return None


# ---------------------------------------------------------------------- client events


@dataclass(frozen=True)
class AudioIn:
    pcm: bytes  # PCM16LE mono at ``rate``
    rate: int
    stream_sid: str | None


@dataclass(frozen=True)
class TextIn:
    text: str


@dataclass(frozen=True)
class ClearIn:
    pass


ClientEvent = AudioIn | TextIn | ClearIn


def leg_input(event: TextIn | ClearIn) -> inputs.LegInput:
    """What a client event other than audio means to the call (audio needs its rate
    matched first: ``bridge.chat.leg``)."""
    match event:
        case TextIn(text=text):
            return inputs.TextInput(text)
        case ClearIn():
            return inputs.Interrupt()


def parse_client_event(event: str, data: object, *, max_bytes: int) -> ClientEvent:
    """One client event → a typed message, or ``PhoneProtocolError`` ("code: message")."""
    match event:
        case "audio":
            return _audio(data, max_bytes)
        case "text":
            text = data.get("data") if isinstance(data, Mapping) else data
            if not isinstance(text, str) or not text.strip():
                raise PhoneProtocolError('bad_message: text needs {data: "…"}, not empty')
            if len(text) > MAX_TEXT_CHARS:
                raise PhoneProtocolError(
                    f"too_large: text is limited to {MAX_TEXT_CHARS} characters"
                )
            return TextIn(text.strip())
        case "clear":
            return ClearIn()
        case _:
            raise PhoneProtocolError(
                f"unknown_event: {event[:40]!r} is not part of the API (audio, text, clear)"
            )


def _audio(data: object, max_bytes: int) -> AudioIn:
    if isinstance(data, bytes | bytearray):
        payload: object = bytes(data)
        meta: object = {}
    elif isinstance(data, Mapping):
        payload = data.get("data")
        meta = data.get("meta_info") or {}
    else:
        raise PhoneProtocolError("bad_message: audio needs {data, meta_info}")
    if not isinstance(meta, Mapping):
        raise PhoneProtocolError("bad_message: meta_info must be an object")
    rate = _rate(meta.get("sample_rate"), DEFAULT_RATE)
    if rate is None:
        raise PhoneProtocolError(
            f"bad_sample_rate: sample_rate must be one of {_RATES_TEXT}, "
            f"got {str(meta.get('sample_rate'))[:12]}"
        )
    stream_sid = meta.get("stream_sid")
    if stream_sid is not None and (
        not isinstance(stream_sid, str | int) or len(str(stream_sid)) > MAX_STREAM_SID_CHARS
    ):
        raise PhoneProtocolError("bad_message: stream_sid must be a short string")
    if isinstance(payload, bytes | bytearray):
        pcm = bytes(payload)
    elif isinstance(payload, str):
        # base64 grows data by 4/3: check before decoding a huge string.
        if len(payload) > max_bytes * 4 // 3 + 4:
            raise PhoneProtocolError(f"too_large: audio is limited to {max_bytes} bytes")
        try:
            pcm = b64.decode(payload)
        except ValueError:
            raise PhoneProtocolError("bad_audio: data is not valid base64") from None
    else:
        raise PhoneProtocolError("bad_message: audio data must be base64 text or binary")
    if len(pcm) > max_bytes:
        raise PhoneProtocolError(f"too_large: audio is limited to {max_bytes} bytes")
    if not pcm or len(pcm) % 2:
        raise PhoneProtocolError("bad_audio: PCM16 needs a whole, non-zero number of samples")
    return AudioIn(pcm, rate, None if stream_sid is None else str(stream_sid))


def error_out(exc: PhoneProtocolError | str, code: str = "bad_message") -> dict[str, str]:
    """``{message, code}`` for an ``error`` event (``message`` is what clients read)."""
    text = str(exc)
    head, sep, rest = text.partition(": ")
    if isinstance(exc, PhoneProtocolError) and sep and " " not in head:
        return {"message": rest, "code": head}
    return {"message": text, "code": code}


# ---------------------------------------------------------------------- server events


def audio_out(
    pcm: bytes, sample_rate: int, stream_sid: str | None, item_id: str | None
) -> dict[str, Any]:
    return {
        "data": b64.encode(pcm),
        "meta_info": {"sample_rate": sample_rate, "stream_sid": stream_sid, "item_id": item_id},
    }


def text_out(text: str, role: str, *, final: bool) -> dict[str, Any]:
    return {"data": text, "role": role, "final": final}
