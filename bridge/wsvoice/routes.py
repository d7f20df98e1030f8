"""``WS /ws/voice`` (and ``WS /`` unless ``WS_VOICE_AT_ROOT=0``): admission, then a call.

Before any model session: the ``Origin`` must be the server's own or one of
``SOFTPHONE_ALLOWED_ORIGINS``, the connection rate per address is checked, and the
softphone's token (``SOFTPHONE_TOKEN``, as ``?token=`` or ``Authorization: Bearer``) must
match; with a real OpenAI key a token must be configured. A refused handshake gets an HTTP
answer (403 origin or token, 400 bad option, 429 rate, 503 draining, full or model down)
with ``{error, message}`` as JSON. An admitted one runs as a ``Call`` (``pcm16`` at the
session's rate, ``echoes_marks=False``) through ``Services.run_call`` with a ``VoiceLeg``.
"""

from __future__ import annotations

import logging
import secrets
import time

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.call import Call
from bridge.leg import POLICY_VIOLATION
from bridge.services import Services
from bridge.softphone.admission import admit, bearer_token
from bridge.softphone.protocol import Refused
from bridge.wsvoice.leg import VoiceLeg, scope_environ
from bridge.wsvoice.protocol import Params, parse_options

logger = logging.getLogger(__name__)

LOGGED_REFUSALS = 10
_STATUS = {
    "origin_not_allowed": 403,
    "unauthorized": 403,
    "disabled": 403,
    "rate_limited": 429,
    "draining": 503,
    "full": 503,
    "unavailable": 503,
}


def ws_voice_routes(services: Services) -> list[BaseRoute]:
    """The raw PCM voice routes: ``/ws/voice``, and ``/`` when so configured."""
    refused = 0

    async def voice(websocket: WebSocket) -> None:
        nonlocal refused
        try:
            params = _admit(websocket, services)
        except Refused as exc:
            refused += 1
            if refused <= LOGGED_REFUSALS or refused % 1000 == 0:
                logger.warning("wsvoice: refused (%d so far): %s", refused, exc.code)
            await deny(websocket, exc)
            return
        await _run(websocket, services, params)

    routes: list[BaseRoute] = [WebSocketRoute("/ws/voice", voice)]
    if services.settings.ws_voice_at_root:
        routes.append(WebSocketRoute("/", voice))
    return routes


def _admit(websocket: WebSocket, services: Services) -> Params:
    settings = services.settings
    environ = scope_environ(websocket)
    params = parse_options(websocket.scope.get("query_string", b"").decode("latin-1"), settings)
    admit(environ, params.token or bearer_token(environ) or "", services, what="wsvoice")
    if services.at_capacity:
        raise Refused("full", "the server is at capacity; try again later")
    if services.model_unreachable:
        raise Refused("unavailable", "Service temporarily unavailable")
    return params


async def deny(websocket: WebSocket, exc: Refused) -> None:
    """Refuse the handshake with an HTTP status and a reason (or a bare 403)."""
    body = {"error": exc.code, "message": exc.message}
    try:
        await websocket.send_denial_response(
            JSONResponse(body, status_code=_STATUS.get(exc.code, 400))
        )
    except RuntimeError:  # the server lacks the denial extension: a plain 403
        await websocket.close(code=POLICY_VIOLATION)


async def _run(websocket: WebSocket, services: Services, params: Params) -> None:
    settings = services.settings
    await websocket.accept()
    session_id = "WV" + secrets.token_hex(16)
    leg = VoiceLeg(
        websocket,
        session_id=session_id,
        rate=params.rate,
        max_bytes=settings.max_message_bytes,
        metrics=services.metrics,
        idle_timeout_s=settings.softphone_idle_timeout_s,
    )
    call = Call.for_leg(
        agent=params.agent,
        call_sid=session_id,
        codec="pcm16",
        rate=params.rate,
        lead_ms=settings.playout_lead_ms,
        uplink_batch_ms=settings.uplink_batch_ms,
        now=time.monotonic(),
        echoes_marks=False,
    )
    logger.info(
        "wsvoice %s: connected (agent %s, %d Hz)", session_id, params.agent.name, params.rate
    )
    await services.run_call(call, leg, leg_name="wsvoice", observers=[leg.observe])
