"""The setup of a simulated Twilio call: the voice webhook, its TwiML, the stream handshake.

Owns what Twilio does before the first media-stream message: the form-encoded ``POST
/twilio/voice`` with the parameters Twilio sends for an inbound call, signed with
``X-Twilio-Signature`` over the public URL; reading ``<Connect><Stream url>`` and its
``<Parameter>`` nouns from the TwiML; where the simulator should really connect; and the
signed WebSocket handshake that opens the stream (``open_stream``). What flows over the
stream once it is open is ``bridge.sim.caller``'s (and the benchmark's lean caller's).
https://www.twilio.com/docs/voice/twiml/stream
https://www.twilio.com/docs/usage/webhooks/webhooks-security
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from bridge.sim.errors import StreamRejected, WebhookRejected

logger = logging.getLogger(__name__)

VOICE_PATH = "/twilio/voice"
API_VERSION = "2010-04-01"
PARAMETER_LIMIT = 500  # combined length of a <Parameter> name and value must be under this


@dataclass(frozen=True)
class StreamTarget:
    """The ``<Connect><Stream>`` of a TwiML document."""

    url: str  # absolute, as Twilio would use it (and sign it)
    parameters: dict[str, str]
    violations: list[str] = field(default_factory=list)


def voice_params(call_sid: str, account_sid: str, from_: str, to: str) -> dict[str, str]:
    """The POST parameters of Twilio's voice webhook for a ringing inbound call."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with these POST params."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


async def post_voice_webhook(
    base_url: str,
    params: dict[str, str],
    *,
    public_url: str | None,
    auth_token: str | None,
    timeout: float = 15.0,
) -> tuple[str, list[str]]:
    """POST the voice webhook; return (TwiML text, violations). Raises WebhookRejected."""
    url = base_url.rstrip("/") + VOICE_PATH
    signed_url = (public_url or base_url).rstrip("/") + VOICE_PATH
    headers = {"User-Agent": "TwilioProxy/1.1", "Content-Type": "application/x-www-form-urlencoded"}
    if auth_token:
        headers["X-Twilio-Signature"] = sign(auth_token, signed_url, params)
    request = urllib.request.Request(
        url, data=urlencode(params).encode(), headers=headers, method="POST"
    )
    # One small POST per call: the standard library in a worker thread is enough.
    try:
        status, content_type, text = await asyncio.to_thread(_post, request, timeout)
    except OSError as exc:
        raise WebhookRejected(f"voice webhook unreachable: {exc!r}") from exc
    if status != 200:
        raise WebhookRejected(
            f"voice webhook answered {status}: {text[:200]!r}", status_code=status
        )
    violations = []
    content_type = content_type.split(";")[0].strip().lower()
    if content_type not in ("text/xml", "application/xml"):
        violations.append(f"TwiML served as {content_type or 'no content type'!r}, not XML")
    return text, violations


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(request: urllib.request.Request, timeout: float) -> tuple[int, str, str]:
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
            return response.status, response.headers.get("Content-Type", ""), body
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read().decode("utf-8", "replace")
            return exc.code, exc.headers.get("Content-Type", ""), body


def parse_twiml(twiml: str, *, request_url: str, require_wss: bool) -> StreamTarget:
    """Find ``<Response><Connect><Stream url>`` and its parameters. Raises WebhookRejected
    (no usable Connect/Stream) or StreamRejected (a URL Twilio would not connect to)."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise WebhookRejected(f"TwiML is not XML: {exc}") from None
    if root.tag != "Response":
        raise WebhookRejected(f"TwiML root is <{root.tag}>, not <Response>")
    stream = None
    for connect_verb in root.iter("Connect"):
        stream = connect_verb.find("Stream")
        if stream is not None:
            break
    if stream is None:
        raise WebhookRejected("TwiML has no <Connect><Stream> (bidirectional stream)")
    raw_url = stream.get("url")
    if not raw_url:
        raise WebhookRejected("<Stream> has no url")
    url = urljoin(request_url, raw_url)
    parts = urlsplit(url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))
    if parts.query:
        raise StreamRejected(f"<Stream url> has a query string ({url}); Twilio refuses it")
    if scheme not in ("wss", "ws") or (require_wss and scheme != "wss"):
        raise StreamRejected(f"<Stream url> scheme {scheme!r}: Twilio connects to wss only")
    parameters: dict[str, str] = {}
    violations: list[str] = []
    for param in stream.findall("Parameter"):
        name, value = param.get("name"), param.get("value")
        if name is None or value is None:
            violations.append("<Parameter> without name or value")
            continue
        if len(name) + len(value) >= PARAMETER_LIMIT:
            violations.append(f"<Parameter name={name!r}> is {len(name) + len(value)} chars")
        parameters[name] = value
    return StreamTarget(url, parameters, violations)


def connect_url(stream_url: str, base_url: str, public_url: str | None) -> str:
    """Where to open the stream: the public host is not reachable from a test, so a URL
    on the public host is redirected to ``base_url``'s host and port."""
    if public_url is None:
        return stream_url
    stream, public, base = urlsplit(stream_url), urlsplit(public_url), urlsplit(base_url)
    if stream.hostname != public.hostname:
        return stream_url
    scheme = "wss" if base.scheme == "https" else "ws"
    return urlunsplit((scheme, base.netloc, stream.path, "", ""))


async def open_stream(
    target: StreamTarget, base_url: str, public_url: str | None, auth_token: str | None
) -> ClientConnection:
    """Open the media WebSocket the TwiML names, as Twilio does: signed over the stream URL
    (no query: Twilio refuses one), redirected from the public host to ``base_url``.
    Raises StreamRejected when the handshake is refused or fails."""
    headers = {"User-Agent": "Twilio.TmeWs/1.0"}
    if auth_token:
        headers["X-Twilio-Signature"] = sign(auth_token, target.url, {})
    try:
        return await connect(
            connect_url(target.url, base_url, public_url),
            additional_headers=headers,
            compression=None,
            proxy=None,
            ping_interval=None,
            max_size=4 * 2**20,
            close_timeout=2.0,
            user_agent_header=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise StreamRejected(f"media handshake refused: {status}", status_code=status) from exc
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise StreamRejected(f"media handshake failed: {exc!r}") from exc


def twiml_summary(target: StreamTarget) -> str:
    """The TwiML's stream as a timeline detail (parameter values are not shown)."""
    names = ",".join(sorted(target.parameters))
    return f"<Connect><Stream url={target.url}> parameters: {names or 'none'}"
