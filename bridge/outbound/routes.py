"""``POST /twilio/status``, ``POST /twilio/amd`` and the admin ``POST /calls``.

* ``/twilio/status``: the status callback of outbound calls (and of numbers set up with
  ``bridge twilio setup``). Logged with the call sid and status only.
* ``/twilio/amd``: the asynchronous answering-machine detection answer
  (``AnsweredBy``), handed to ``bridge.outbound.amd``.

Both are signed like the voice webhook: with ``TWILIO_AUTH_TOKEN`` set, a request whose
``X-Twilio-Signature`` does not match ``PUBLIC_URL`` + path (+ query) and its form gets a
plain 403 and changes nothing.

* ``POST /calls`` (admin API, bearer ``ADMIN_TOKEN``, wired by ``bridge.admin``):
  ``{"to": "+1…" or "sip:…", "agent"?, "from"?, "machine_detection"?: bool}`` places a call
  (``bridge.outbound.place``): 201 ``{"sid", "to", "agent", "machine_detection"}``; 400 for a
  bad body or number; 502 when Twilio refused; 503 when settings are missing.

Must not touch the media socket, nor a call's audio.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.outbound.amd import answered, forget
from bridge.outbound.place import AMD_PATH, STATUS_PATH, BadTarget, place_call
from bridge.services import Services
from bridge.twilio_api import TwilioApiError
from twiml.security import SIGNATURE_HEADER, validate_twilio_signature
from twiml.voice import _CALL_SID, _clip, _read_form

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
_MAX_BODY = 4096
_FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


def callback_routes(services: Services) -> list[Route]:
    """The two signed Twilio callbacks."""
    settings = services.settings

    async def status(request: Request) -> Response:
        form = await _signed_form(settings, request, STATUS_PATH)
        if isinstance(form, Response):
            return form
        logger.info(
            "call %s: status %s%s",
            form.get("CallSid", "?"),
            _clip(form.get("CallStatus", "?"), 32),
            f" ({_clip(form['AnsweredBy'], 32)})" if form.get("AnsweredBy") else "",
        )
        if form.get("CallStatus") in _FINAL:
            forget(form["CallSid"])
        return Response(status_code=204)

    async def amd(request: Request) -> Response:
        form = await _signed_form(settings, request, AMD_PATH)
        if isinstance(form, Response):
            return form
        answer = await answered(services, form["CallSid"], form.get("AnsweredBy", ""))
        return JSONResponse({"answer": answer})

    return [
        Route(STATUS_PATH, status, methods=["POST"]),
        Route(AMD_PATH, amd, methods=["POST"]),
    ]


async def _signed_form(
    settings: Settings, request: Request, path: str
) -> dict[str, str] | Response:
    """The callback's form once its signature checked out, or the error response."""
    form = await _read_form(request)
    if isinstance(form, Response):
        return form
    if settings.twilio_auth_token:
        url = (settings.public_url or "").rstrip("/") + path
        url += f"?{request.url.query}" if request.url.query else ""
        signature = request.headers.get(SIGNATURE_HEADER)
        if not validate_twilio_signature(settings.twilio_auth_token, url, form, signature):
            logger.warning(
                "%s rejected: %s X-Twilio-Signature",
                path,
                "bad" if signature else "missing",
            )
            return PlainTextResponse("invalid Twilio signature", status_code=403)
    if not _CALL_SID.fullmatch(form.get("CallSid", "")):
        return PlainTextResponse("missing or malformed CallSid", status_code=400)
    return dict(form)


def place_endpoint(services: Services) -> Endpoint:
    """The admin ``POST /calls`` handler (the admin API's bearer guard goes around it)."""

    async def place(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            return _error(413, "body too large")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "the body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            return _error(400, 'the body must be {"to": "+1…", "agent"?, "from"?, …}')
        agent, from_ = body.get("agent"), body.get("from")
        amd = body.get("machine_detection", False)
        if not (
            isinstance(agent, str | None)
            and isinstance(from_, str | None)
            and isinstance(amd, bool)
        ):
            return _error(400, "agent and from must be text, machine_detection true or false")
        try:
            placed = await place_call(
                services.settings, body["to"], agent=agent, from_=from_, amd=amd
            )
        except BadTarget as exc:
            return _error(400, str(exc))
        except ConfigError as exc:
            return _error(503, str(exc))
        except TwilioApiError as exc:
            return _error(502, str(exc))
        logger.info("admin: call %s placed", placed.call_sid)
        return JSONResponse(
            {
                "sid": placed.call_sid,
                "to": placed.to,
                "agent": placed.agent,
                "machine_detection": placed.machine_detection,
            },
            status_code=201,
        )

    return place


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
