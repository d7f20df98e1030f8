"""Who may start a call: Twilio request signatures and per-call stream tokens.

Owns two checks and nothing else (no HTTP framework, no I/O):

* ``X-Twilio-Signature``: Twilio signs every webhook with HMAC-SHA1 (keyed with the
  account auth token) over the full URL it called followed by the sorted POST
  parameters (name + value, no separators), base64-encoded
  (https://www.twilio.com/docs/usage/webhooks/webhooks-security). We let
  ``twilio.request_validator.RequestValidator`` do the arithmetic; it also tries the URL
  with and without the default port, because Twilio is not consistent about it.
  The URL must be the **public** one Twilio called (``PUBLIC_URL``), never the one the
  server sees behind ngrok or a proxy.
* The Media Streams WebSocket handshake carries ``X-Twilio-Signature`` too, computed
  over the ``wss://`` URL of the stream with no POST parameters.
* Stream tokens: the voice webhook hands Twilio a short-lived token bound to the call
  sid (as a ``<Parameter>``; the stream URL may not carry a query string); the media
  socket checks it against ``start.callSid`` before any AI session is opened. Format:
  ``base64url("{call_sid}.{expiry}") + "." + base64url(HMAC-SHA256(secret, ...))``.
  ``expiry`` is wall-clock Unix seconds, so tokens stay valid across processes that
  share ``STREAM_TOKEN_SECRET``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from typing import Literal

from twilio.request_validator import RequestValidator

from bridge.config import Settings
from bridge.errors import SecurityError

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
MEDIA_PATH = "/twilio/media"

# Domain separation: the same secret could one day sign something else.
_TOKEN_CONTEXT = b"phone-bridge stream token v1\x00"
_MAX_TOKEN_CHARS = 512
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_EXPIRY = re.compile(r"[0-9]{1,12}")

TokenFailure = Literal["malformed", "bad_signature", "expired", "wrong_call"]


class StreamTokenError(SecurityError):
    """A stream token did not check out; ``reason`` says why, in one word."""

    def __init__(self, reason: TokenFailure, message: str) -> None:
        super().__init__(message)
        self.reason: TokenFailure = reason


# --- stream tokens -------------------------------------------------------------------


def make_stream_token(secret: str, call_sid: str, now: float, ttl_s: int) -> str:
    """A token that lets the media socket of ``call_sid`` in until ``now + ttl_s``.

    ``now`` is wall-clock seconds (``time.time()``).
    """
    if not secret:
        raise ValueError("stream token secret is empty")
    if not call_sid:
        raise ValueError("call sid is empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    payload = f"{call_sid}.{int(now + ttl_s)}".encode()
    return f"{_b64encode(payload)}.{_b64encode(_mac(secret, payload))}"


def check_stream_token(secret: str, call_sid: str, token: str | None, now: float) -> None:
    """Raise ``StreamTokenError`` unless ``token`` was made for ``call_sid`` and is fresh.

    Reasons, in the order they are checked: malformed, bad_signature, expired, wrong_call.
    """
    if not secret:
        raise ValueError("stream token secret is empty")
    if not isinstance(token, str) or not token:
        raise StreamTokenError("malformed", "stream token missing")
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
        raise StreamTokenError("malformed", "stream token malformed")
    payload_b64, mac_b64 = token.split(".")
    payload = _b64decode(payload_b64)
    mac = _b64decode(mac_b64)
    if payload is None or mac is None:
        raise StreamTokenError("malformed", "stream token malformed")
    token_call_sid, sep, expiry_text = payload.decode("utf-8", "replace").rpartition(".")
    if not sep or not token_call_sid or not _EXPIRY.fullmatch(expiry_text):
        raise StreamTokenError("malformed", "stream token malformed")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise StreamTokenError("bad_signature", "stream token signature does not match")
    if now > int(expiry_text):
        raise StreamTokenError("expired", "stream token expired")
    if not hmac.compare_digest(token_call_sid.encode(), call_sid.encode()):
        raise StreamTokenError("wrong_call", "stream token was issued for another call")


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), _TOKEN_CONTEXT + payload, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


# --- Twilio signatures ---------------------------------------------------------------


def validate_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """True if ``signature`` is Twilio's HMAC-SHA1 of ``url`` + sorted ``params``.

    ``url`` is the full public URL Twilio requested (with its query string, if any);
    ``params`` the form-encoded POST parameters (a multi-dict with ``getlist`` keeps
    repeated names, as Twilio signs them). A missing or empty signature is invalid.
    """
    if not auth_token:
        raise ValueError("auth token is empty")
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def public_ws_url(public_url: str, path: str = MEDIA_PATH) -> str:
    """``https://host[/prefix]`` → ``wss://host[/prefix]{path}`` (``http`` → ``ws``)."""
    base = public_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + path
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + path
    raise ValueError(f"public URL must be http(s), got {public_url!r}")


def twilio_ws_signature_ok(
    settings: Settings, headers: Mapping[str, str], path: str = MEDIA_PATH
) -> bool:
    """Check the Media Streams handshake's ``X-Twilio-Signature``.

    Twilio signs the ``wss://`` URL from ``<Stream url>`` with no parameters. True when
    no auth token is configured (unsigned development mode); False when a token is
    configured but there is no public URL to check against.
    """
    if not settings.twilio_auth_token:
        return True
    if not settings.public_url:
        logger.warning("cannot check the media handshake signature: PUBLIC_URL is not set")
        return False
    url = public_ws_url(settings.public_url, path)
    signature = _header(headers, SIGNATURE_HEADER)
    return validate_twilio_signature(settings.twilio_auth_token, url, {}, signature)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts too."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None
