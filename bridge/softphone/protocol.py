"""The softphone's Socket.IO event API, sans-I/O: connect parameters, client events, replies.

Owns what goes over the ``/softphone`` namespace and nothing else: it never touches
sockets, the Call or the clock. Client events become the typed leg inputs of
``bridge.inputs`` through :func:`leg_input`. The shape follows existing Socket.IO voice gateways
(``audio`` with ``{data, meta_info: {sample_rate, …}}``, ``text``, ``clear``, ``status``,
``error``); ``mark`` is this bridge's addition, so the page can report playback progress
exactly like Twilio's media stream does (``bridge.playout``).

Client → server::

    audio   {data: base64 PCM16LE mono | binary attachment, meta_info: {sample_rate, stream_sid?}}
            (or the bare binary attachment); the rate must be the session's
    text    {data: "…"}                    typed input; ack {ok: true} | {ok: false, error}
    mark    {name: "seq:item_id"}          the page played (or, after clear, dropped) up to it
    clear   {} (any payload)               stop the agent's speech; ack {ok: true}
    hangup  {} (any payload)               end the call; ack {ok: true}

Server → client::

    status  {state: "connected", session, agent, sample_rate} | {state: "agent-ready"}
            | {state: "ended", reason}
    audio   {data: base64 PCM16LE, meta_info: {sample_rate, item_id}}
    mark    {name}                         echo it when playback reaches it (or on clear)
    clear   {}                             barge-in: drop queued audio now, echo pending marks
    text    {role: "user" | "assistant", text, final}
    error   {code, message}                a dropped message or an agent-side problem

Connect parameters come from the Socket.IO ``auth`` object, or the query string:
``agentId`` (optional: the default agent), ``sample_rate`` (16000, 24000 or 48000;
default 24000), ``token`` (required when ``SOFTPHONE_TOKEN`` is set; an
``Authorization: Bearer`` header also works) and ``resume`` (an id the client picks at
random and sends each time it connects: a connection that drops is then taken up again
within ``SOCKETIO_RESUME_GRACE_S``; the ``connected`` status echoes it). A refusal
carries ``{message, data: {code}}``, which the page shows.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bridge import b64, inputs
from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import PhoneProtocolError

__all__ = [
    "DEFAULT_RATE",
    "HANGUP_REASON",
    "NAMESPACE",
    "RATES",
    "AudioIn",
    "ClearIn",
    "ClientEvent",
    "ConnectParams",
    "HangupIn",
    "MarkIn",
    "Refused",
    "TextIn",
    "allowed_origin",
    "audio_out",
    "check_token",
    "connect_fields",
    "leg_input",
    "parse_client_event",
    "parse_connect",
    "resume_id",
]

NAMESPACE = "/softphone"
RATES = (16000, 24000, 48000)
DEFAULT_RATE = 24000
MAX_TEXT_CHARS = 4000
MAX_MARK_CHARS = 200


# ---------------------------------------------------------------------- connect


class Refused(Exception):
    """A connection the bridge will not take; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ConnectParams:
    agent: Agent
    sample_rate: int
    resume: str | None = None  # the client's resume id (bridge.softphone.resume)


def parse_connect(auth: object, query_string: str, settings: Settings) -> ConnectParams:
    """Check the token and pick the agent and rate; raise ``Refused`` with a reason."""
    params = connect_fields(auth, query_string)
    check_token(params.get("token", ""), settings)
    name = params.get("agentId") or settings.default_agent
    agent = settings.agent(name)
    if agent is None:
        raise Refused("unknown_agent", f"there is no agent named {name[:64]!r}")
    raw_rate = params.get("sample_rate") or str(DEFAULT_RATE)
    try:
        rate = int(raw_rate)
    except ValueError:
        rate = 0
    if rate not in RATES:
        raise Refused("bad_sample_rate", f"sample_rate must be one of {', '.join(map(str, RATES))}")
    return ConnectParams(agent, rate, resume_id(params))


def check_token(token: str, settings: Settings) -> None:
    """Refuse unless ``token`` is ``SOFTPHONE_TOKEN`` (or none is needed: local agent)."""
    expected = settings.softphone_token
    if not expected and not settings.uses_local_agent:
        # Without a token, anyone who finds the URL would talk to the model on our key.
        raise Refused(
            "disabled",
            "the softphone is off: set SOFTPHONE_TOKEN on the server "
            "to use it with the OpenAI Realtime API",
        )
    if expected:
        if not token:
            raise Refused("unauthorized", "this softphone needs an access token")
        # surrogatepass: a JSON "\ud800" escape in auth must be refused, not crash encode().
        if not hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
        ):
            raise Refused("unauthorized", "the access token is not valid")


CONNECT_KEYS = ("agentId", "sample_rate", "token", "resume")
_RESUME_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def resume_id(fields: Mapping[str, str]) -> str | None:
    """The client's resume id (None: it asked for none); ``Refused`` if it is malformed.

    The client picks it (at random: it is the key to its session) and sends the same one
    each time it connects, as Socket.IO clients do with their ``auth`` when they reconnect.
    """
    value = fields.get("resume")
    if not value:
        return None
    if not _RESUME_ID.fullmatch(value):
        raise Refused("bad_resume", "resume must be 16 to 64 letters, digits, '-' or '_'")
    return value


def connect_fields(
    auth: object, query_string: str, keys: Iterable[str] = CONNECT_KEYS
) -> dict[str, str]:
    """Connect fields as text; ``auth`` wins over the query string."""
    fields: dict[str, str] = {}
    query = parse_qs(query_string or "", keep_blank_values=False)
    for key in keys:
        if key in query:
            fields[key] = query[key][0]
    if isinstance(auth, Mapping):
        for key in keys:
            value = auth.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                fields[key] = str(value)
    return fields


def allowed_origin(
    origin: str | None,
    *,
    configured: Iterable[str],
    same_origin: Iterable[str],
) -> bool:
    """Whether a browser page at ``origin`` may open a session.

    No ``Origin`` header means no browser page is involved (a script or a server-side
    client, which the token guards). The page's own origin (``same_origin``: derived from
    the request and PUBLIC_URL) always passes; other origins only when configured.
    """
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    allowed = {o.strip().rstrip("/").lower() for o in (*configured, *same_origin)}
    return "*" in allowed or origin in allowed


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------------- client events


@dataclass(frozen=True)
class AudioIn:
    pcm: bytes  # PCM16LE mono at the session's rate


@dataclass(frozen=True)
class TextIn:
    text: str


@dataclass(frozen=True)
class MarkIn:
    name: str


@dataclass(frozen=True)
class ClearIn:
    pass


@dataclass(frozen=True)
class HangupIn:
    pass


ClientEvent = AudioIn | TextIn | MarkIn | ClearIn | HangupIn

HANGUP_REASON = "hung up"


def leg_input(event: ClientEvent) -> inputs.LegInput:
    """What a client event means to the call."""
    match event:
        case AudioIn(pcm=pcm):
            return inputs.CallerAudio(pcm)
        case MarkIn(name=name):
            return inputs.FarEndMark(name)
        case TextIn(text=text):
            return inputs.TextInput(text)
        case ClearIn():
            return inputs.Interrupt()
        case HangupIn():
            return inputs.HangUp(HANGUP_REASON)


def parse_client_event(
    event: str, data: object, *, sample_rate: int, max_bytes: int
) -> ClientEvent:
    """One client event → a typed message, or ``PhoneProtocolError`` (drop it, say why).

    The error's first word is a stable code (``bad_message``, ``too_large``, ``bad_audio``,
    ``sample_rate_mismatch``, ``unknown_event``); see ``error_payload``.
    """
    match event:
        case "audio":
            return _audio(data, sample_rate, max_bytes)
        case "text":
            text = data.get("data") if isinstance(data, Mapping) else data
            if not isinstance(text, str) or not text.strip():
                raise PhoneProtocolError('bad_message: text needs {data: "…"}, not empty')
            if len(text) > MAX_TEXT_CHARS:
                raise PhoneProtocolError(
                    f"too_large: text is limited to {MAX_TEXT_CHARS} characters"
                )
            return TextIn(text.strip())
        case "mark":
            name = data.get("name") if isinstance(data, Mapping) else data
            if not isinstance(name, str) or not name or len(name) > MAX_MARK_CHARS:
                raise PhoneProtocolError('bad_message: mark needs {name: "…"}')
            return MarkIn(name)
        case "clear":
            return ClearIn()
        case "hangup":
            return HangupIn()
        case _:
            raise PhoneProtocolError(f"unknown_event: {event[:40]!r} is not part of the API")


def _audio(data: object, sample_rate: int, max_bytes: int) -> AudioIn:
    if isinstance(data, bytes | bytearray):
        payload: object = bytes(data)
        meta: object = {}
    elif isinstance(data, Mapping):
        payload = data.get("data")
        meta = data.get("meta_info", {})
    else:
        raise PhoneProtocolError("bad_message: audio needs {data, meta_info: {sample_rate}}")
    if not isinstance(meta, Mapping):
        raise PhoneProtocolError("bad_message: meta_info must be an object")
    rate = meta.get("sample_rate", sample_rate)
    # ASCII and short: "²".isdigit() is true and int() past 4300 digits raises ValueError.
    if isinstance(rate, str) and rate.isascii() and rate.isdigit() and len(rate) <= 6:
        rate = int(rate)
    if rate != sample_rate:
        raise PhoneProtocolError(
            f"sample_rate_mismatch: this session was opened at "
            f"{sample_rate} Hz, got {str(rate)[:12]}"
        )
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
    return AudioIn(pcm)


def error_payload(exc: PhoneProtocolError) -> dict[str, str]:
    """``{code, message}`` for an ``error`` event, from a parse error."""
    code, sep, message = str(exc).partition(": ")
    if not sep or " " in code:
        return {"code": "bad_message", "message": str(exc)}
    return {"code": code, "message": message}


# ---------------------------------------------------------------------- server events


def audio_out(pcm: bytes, sample_rate: int, item_id: str | None) -> dict[str, Any]:
    return {
        "data": b64.encode(pcm),
        "meta_info": {"sample_rate": sample_rate, "item_id": item_id},
    }
