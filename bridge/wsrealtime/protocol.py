"""The ``/ws/realtime`` JSON protocol, sans-I/O: client requests, server replies, limits.

Client → server (text frames, one JSON object each)::

    {"type": "realtime_session_request", "session"?: {…}, "expiresIn"?: 10..7200}
    {"type": "tts_request", "text": "…", "voice"?: "alloy", "format"?: "wav" | "pcm"}

Server → client::

    {"type": "status", "state": "connected" | "minting" | "synthesizing", …}
    {"type": "realtime_session_response", "clientSecret": "ek_…", "expiresAt": <unix s>,
     "session": {…}, "model": "…", "realtimeUrl": "wss://…"}
    {"type": "tts_response", "audio": "<base64>", "format": "wav" | "pcm",
     "sampleRate": 24000}
    {"type": "error", "message": "…"}

``session`` is a Realtime session configuration (GA shape); without it the agent's is
used. Texts over ``MAX_TTS_CHARS`` are refused (the speech endpoint's own limit), not split.
Each connection may make ``REQUESTS_PER_MINUTE`` requests (a burst of ``BURST``); bad
messages count too, and ``MAX_BAD`` of them close the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.errors import PhoneProtocolError

MAX_MESSAGE_CHARS = 64 * 1024
MAX_TTS_CHARS = 4096
TTS_FORMATS = ("wav", "pcm")
TTS_RATE = 24000  # what the speech endpoint returns for wav and pcm
# The names the speech endpoint knows.
TTS_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)
REQUESTS_PER_MINUTE = 20
BURST = 5
MAX_BAD = 20


@dataclass(frozen=True)
class SessionRequest:
    session: dict[str, Any] | None
    expires_in: int


@dataclass(frozen=True)
class TtsRequest:
    text: str
    voice: str | None
    format: str


Request = SessionRequest | TtsRequest


def parse_request(message: str | bytes | None) -> Request:
    """One client frame → a request, or ``PhoneProtocolError`` saying what is wrong."""
    if not isinstance(message, str):
        raise PhoneProtocolError("binary frames are not accepted: send JSON text")
    if len(message) > MAX_MESSAGE_CHARS:
        raise PhoneProtocolError(f"message is over {MAX_MESSAGE_CHARS} characters")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise PhoneProtocolError("message is not JSON") from None
    if not isinstance(data, dict):
        raise PhoneProtocolError("message must be a JSON object with a type")
    kind = data.get("type")
    if kind == "realtime_session_request":
        session = data.get("session")
        if session is not None and not isinstance(session, dict):
            raise PhoneProtocolError("session must be an object")
        if not _sendable(session):
            raise PhoneProtocolError("session must be plain JSON: no NaN, no lone surrogates")
        expires = data.get("expiresIn", 600)
        if not isinstance(expires, int) or isinstance(expires, bool) or not 10 <= expires <= 7200:
            raise PhoneProtocolError("expiresIn must be a whole number of seconds, 10 to 7200")
        return SessionRequest(session, expires)
    if kind == "tts_request":
        text, voice, fmt = data.get("text"), data.get("voice"), data.get("format", "wav")
        if not isinstance(text, str) or not text.strip():
            raise PhoneProtocolError("tts_request needs text")
        if not _sendable(text):
            raise PhoneProtocolError("text must be valid Unicode: no lone surrogates")
        if len(text) > MAX_TTS_CHARS:
            raise PhoneProtocolError(
                f"text is {len(text)} characters; the limit is {MAX_TTS_CHARS}: split it"
            )
        if voice is not None and (not isinstance(voice, str) or voice not in TTS_VOICES):
            raise PhoneProtocolError(f"voice must be one of {', '.join(sorted(TTS_VOICES))}")
        if fmt not in TTS_FORMATS:
            raise PhoneProtocolError(f"format must be one of {', '.join(TTS_FORMATS)}")
        return TtsRequest(text, voice, fmt)
    raise PhoneProtocolError(f"unknown type {str(kind)[:40]!r}")


def _sendable(value: object) -> bool:
    """Whether ``value`` can go on to OpenAI as a JSON body (strict JSON, UTF-8)."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return True


class RequestBudget:
    """Requests a connection may make: ``REQUESTS_PER_MINUTE``, a burst of ``BURST``."""

    def __init__(self, now: float) -> None:
        self.left = float(BURST)
        self.at = now

    def take(self, now: float) -> bool:
        self.left = min(float(BURST), self.left + (now - self.at) * REQUESTS_PER_MINUTE / 60)
        self.at = now
        if self.left < 1:
            return False
        self.left -= 1
        return True


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def status(state: str, **fields: Any) -> str:
    return _dumps({"type": "status", "state": state, **fields})


def error(message: str) -> str:
    return _dumps({"type": "error", "message": message})


def session_response(minted: dict[str, Any], realtime_url: str) -> str:
    session = minted.get("session") or {}
    return _dumps(
        {
            "type": "realtime_session_response",
            "clientSecret": minted["value"],
            "expiresAt": minted["expires_at"],
            "session": session,
            "model": session.get("model"),
            "realtimeUrl": realtime_url,
        }
    )


def tts_response(audio_b64: str, fmt: str) -> str:
    return _dumps(
        {"type": "tts_response", "audio": audio_b64, "format": fmt, "sampleRate": TTS_RATE}
    )
