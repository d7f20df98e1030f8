"""``POST /twilio/voice``: answer an incoming call with ``<Connect><Stream>`` TwiML.

Owns the voice webhook: it checks Twilio's signature, picks the agent for the called
number (E.164 or SIP URI), mints the per-call stream token and tells Twilio to open a
bidirectional Media Stream to ``/twilio/media``. It does not touch the media socket.

Rules from https://www.twilio.com/docs/voice/twiml/stream: the ``<Stream url>`` may not
carry a query string, so per-call data travels as ``<Parameter>`` elements and comes
back in the ``start`` message's ``customParameters``.

Phone numbers never reach the log unmasked.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.privacy import mask_number
from twiml.security import (
    MEDIA_PATH,
    SIGNATURE_HEADER,
    make_stream_token,
    public_ws_url,
    validate_twilio_signature,
)

logger = logging.getLogger(__name__)

__all__ = ["make_voice_endpoint", "mask_number", "voice_twiml"]

VOICE_PATH = "/twilio/voice"
# Twilio's voice webhook is a few dozen short form fields; bound what we buffer.
MAX_WEBHOOK_BYTES = 16 * 1024
MAX_FORM_FIELDS = 200
# Kept conservative: name + value of one <Parameter> under 500 characters.
MAX_PARAMETER_CHARS = 500

# Characters XML 1.0 cannot carry at all (ElementTree would write them anyway).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_CALL_SID = re.compile(r"[A-Za-z0-9_\-]{1,64}")

Endpoint = Callable[[Request], Awaitable[Response]]
# (From, the call's agent) → TwiML answering the call instead of the stream, or None.
Admit = Callable[[str, Agent], Awaitable[str | None]]
# Where Twilio asks what to do once the stream has ended (twiml.fallback).
AFTER_PATH = "/twilio/after"


def voice_twiml(
    *,
    stream_url: str,
    parameters: dict[str, str],
    fallback: str | None = None,
    action: str | None = None,
) -> str:
    """``<Response><Connect><Stream url=…><Parameter …/>…</Stream></Connect></Response>``.

    When the bridge ends the stream while the caller is still on the line, Twilio asks
    ``action`` (``<Connect action>``, https://www.twilio.com/docs/voice/twiml/connect) what
    to do next: the agent's fallback if the model failed, else a hang-up
    (``twiml.fallback``). Without ``action`` it goes on to the verbs after ``<Connect>``:
    ``fallback``, if given, is said then, instead of a silent hang-up.

    Raises ``ValueError`` for a stream URL that is not ws(s) or carries a query string,
    and for a parameter that XML cannot carry or that is too long.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        raise ValueError(f"stream URL must be a wss:// URL, got {stream_url!r}")
    if parts.query or parts.fragment or "?" in stream_url:
        raise ValueError("stream URL may not carry a query string; use <Parameter>")
    response = VoiceResponse()
    connect = Connect(action=action) if action else Connect()
    stream = Stream(url=stream_url)
    for name, value in parameters.items():
        if not name:
            raise ValueError("parameter name is empty")
        if len(name) + len(value) > MAX_PARAMETER_CHARS:
            raise ValueError(f"parameter {name!r} is longer than {MAX_PARAMETER_CHARS} chars")
        if _XML_INVALID.search(name) or _XML_INVALID.search(value):
            raise ValueError(f"parameter {name!r} holds characters XML cannot carry")
        stream.parameter(name=name, value=value)
    connect.append(stream)
    response.append(connect)
    if fallback and not action:
        response.say(_clip(fallback, 4000))
    return str(response)


def make_voice_endpoint(
    settings: Settings,
    *,
    now: Callable[[], float] = time.time,
    admit: Admit | None = None,
) -> Endpoint:
    """The Starlette endpoint for ``POST /twilio/voice``.

    ``now`` is the wall clock used to date stream tokens. ``admit(caller, agent)`` may
    answer a call with other TwiML instead of the stream (busy, the model's fallback). With
    ``settings.twilio_auth_token`` set, a request whose signature does not match
    ``settings.public_url + "/twilio/voice"`` (plus its query string) gets a plain 403.
    """
    if settings.twilio_auth_token and not settings.public_url:
        raise ConfigError("PUBLIC_URL is required to check Twilio signatures")
    voice_url = (settings.public_url or "").rstrip("/") + VOICE_PATH

    async def voice(request: Request) -> Response:
        form = await _read_form(request)
        if isinstance(form, Response):
            return form

        if settings.twilio_auth_token:
            url = voice_url + (f"?{request.url.query}" if request.url.query else "")
            signature = request.headers.get(SIGNATURE_HEADER)
            if not validate_twilio_signature(settings.twilio_auth_token, url, form, signature):
                logger.warning(
                    "voice webhook rejected: %s X-Twilio-Signature (call %r, client %s)",
                    "bad" if signature else "missing",
                    _clip(form.get("CallSid", ""), 64),
                    request.client.host if request.client else "?",
                )
                return PlainTextResponse("invalid Twilio signature", status_code=403)

        call_sid = form.get("CallSid", "")
        if not _CALL_SID.fullmatch(call_sid):
            logger.warning("voice webhook rejected: missing or malformed CallSid")
            return PlainTextResponse("missing or malformed CallSid", status_code=400)

        stream_url = _stream_url(settings, request)
        if stream_url is None:
            logger.warning("voice webhook rejected: unusable Host header (call %s)", call_sid)
            return PlainTextResponse("bad Host header", status_code=400)

        caller = _clip(form.get("From", ""), MAX_PARAMETER_CHARS - len("From"))
        called = _clip(form.get("To", ""), MAX_PARAMETER_CHARS - len("To"))
        agent = settings.agent_for(called or None)
        instead = await admit(caller, agent) if admit is not None else None
        if instead is not None:
            return Response(instead, media_type="text/xml")
        token = make_stream_token(
            settings.stream_token_secret, call_sid, now(), settings.stream_token_ttl_s
        )
        # Twilio may leave From empty (withheld caller id): omit it rather than send "".
        parameters = {"From": caller, "To": called}
        parameters = {name: value for name, value in parameters.items() if value}
        parameters |= {"CallSid": call_sid, "agent": agent.name, "token": token}
        logger.info(
            "call %s from %s to %s: agent %r",
            call_sid,
            mask_number(caller),
            mask_number(called),
            agent.name,
        )
        return Response(
            voice_twiml(
                stream_url=stream_url,
                parameters=parameters,
                # Absolute when we know the public URL: a relative one would resolve
                # outside a path prefix (https://host/prefix/twilio/voice).
                action=(settings.public_url or "")
                + AFTER_PATH
                + "?"
                + urlencode({"agent": agent.name}),
            ),
            media_type="text/xml",
        )

    return voice


def _clip(value: str, limit: int) -> str:
    """Drop characters XML cannot carry and keep at most ``limit`` characters."""
    return _XML_INVALID.sub("", value)[:limit]


def _stream_url(settings: Settings, request: Request) -> str | None:
    if settings.public_url:
        return public_ws_url(settings.public_url, MEDIA_PATH)
    # Development without PUBLIC_URL (no signature checks either): trust the Host header
    # only as far as it looks like a host.
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        return None
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{host}{MEDIA_PATH}"


async def _read_form(request: Request) -> ImmutableMultiDict[str, str] | Response:
    """The url-encoded form body, read with a size cap, or the error response to send.

    Parsed with ``urllib.parse`` rather than ``request.form()``: Starlette's form parser
    needs ``python-multipart``, a dependency this one small body does not justify.
    """
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        logger.warning("voice webhook rejected: content type %r", content_type[:64])
        return PlainTextResponse("expected a form-encoded body", status_code=415)
    declared = request.headers.get("content-length", "")
    too_large = PlainTextResponse("body too large", status_code=413)
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        logger.warning("voice webhook rejected: body of %s bytes", declared)
        return too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            logger.warning("voice webhook rejected: body over %d bytes", MAX_WEBHOOK_BYTES)
            return too_large
    try:
        # Same decoding as a browser form post: '+' is a space, %XX is UTF-8.
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        logger.warning("voice webhook rejected: malformed form body")
        return PlainTextResponse("malformed form body", status_code=400)
    # Keep repeated names: Twilio signs every value.
    return ImmutableMultiDict(pairs)
