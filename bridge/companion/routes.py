"""The companion protocol's routes: ``/ws/companion`` and its HTTP API.

    WS  /ws/companion                     the JSON companion protocol (``protocol``)
    GET /health                           liveness, connections and sessions
    GET /ws/status                        connections and live sessions by protocol
    GET /api/realtime/sessions            live companion sessions         (admin token)
    GET /api/realtime/sessions/{clientId} one of them, or 404             (admin token)
    GET /api/realtime/metrics             sessions created, active, average duration,
                                          error rate, audio processed    (admin token)

Admission (before any model session): the ``Origin`` must be the server's own or one of
``SOFTPHONE_ALLOWED_ORIGINS`` (else the handshake is refused, 403); the softphone's connect
token (``SOFTPHONE_TOKEN``, as ``?token=`` or ``Authorization: Bearer``) is required when
set, and must be set when a real OpenAI key is; then ``auth`` and ``start_realtime``, which
are refused while the shared model breaker is open, beyond the per-``userId`` cap or when
the server is full. Conversations continue across sessions through the call records
(``bridge.companion.history``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.agents import Agent
from bridge.call import Call
from bridge.companion import history
from bridge.companion import protocol as wire
from bridge.companion.leg import CompanionLeg
from bridge.companion.sessions import CompanionSessions, LiveSession, RateWindow
from bridge.config import Settings
from bridge.leg import POLICY_VIOLATION
from bridge.services import Services
from bridge.softphone.protocol import allowed_origin, origin_of

logger = logging.getLogger(__name__)

LEG = "companion"


def companion_routes(services: Services) -> list[BaseRoute]:
    settings = services.settings
    registry = CompanionSessions(settings.companion_max_sessions_per_user)

    async def companion(websocket: WebSocket) -> None:
        if not allowed_origin(
            websocket.headers.get("origin"),
            configured=settings.softphone_allowed_origins,
            same_origin=_same_origins(websocket, settings),
        ):
            logger.warning("companion: refused a connection from a foreign origin")
            await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await websocket.accept()
        registry.connections += 1
        try:
            refusal = _token_refusal(websocket, settings)
            if refusal is None and services.draining:
                refusal = "the server is shutting down; try again shortly"
            if refusal is not None:
                await websocket.send_text(wire.error(refusal))
                await websocket.close(code=POLICY_VIOLATION, reason=refusal[:120])
                return
            await _session(websocket, services, registry)
        finally:
            registry.connections -= 1

    def admin(handler: Any) -> Any:
        async def guarded(request: Request) -> Response:
            if not _admin_ok(request, settings.admin_token):
                return JSONResponse(
                    {"error": "unauthorized"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            result: Response = await handler(request)
            return result

        return guarded

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "draining" if services.draining else "ok",
                "connections": registry.connections,
                "sessions": len(services.calls),
            },
            status_code=503 if services.draining else 200,
        )

    async def ws_status(request: Request) -> Response:
        by_leg = Counter(runner.leg_name or "other" for runner in services.calls)
        return JSONResponse(
            {
                "connections": {LEG: registry.connections},
                "sessions": dict(sorted(by_leg.items())),
                "total": len(services.calls),
                "draining": services.draining,
            }
        )

    async def sessions(request: Request) -> Response:
        now, wall = time.monotonic(), datetime.now(UTC)
        return JSONResponse({"sessions": [s.view(now, wall) for s in registry.live.values()]})

    async def one_session(request: Request) -> Response:
        live = registry.live.get(request.path_params["client_id"])
        if live is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        return JSONResponse(live.view(time.monotonic(), datetime.now(UTC)))

    async def metrics(request: Request) -> Response:
        return JSONResponse(registry.figures())

    return [
        WebSocketRoute("/ws/companion", companion),
        Route("/health", health),
        Route("/ws/status", ws_status),
        Route("/api/realtime/sessions", admin(sessions)),
        Route("/api/realtime/sessions/{client_id}", admin(one_session)),
        Route("/api/realtime/metrics", admin(metrics)),
    ]


async def _session(websocket: WebSocket, services: Services, registry: CompanionSessions) -> None:
    """Read ``auth`` and ``start_realtime``, then run the call; refusals leave it open."""
    settings = services.settings
    base = settings.agent(settings.default_agent)
    assert base is not None  # checked in Settings.from_env
    client_id = "c_" + secrets.token_hex(8)
    rate = RateWindow(settings.companion_messages_per_minute)
    auth: wire.Auth | None = None
    last = time.monotonic()
    while True:
        remaining = last + settings.companion_idle_timeout_s - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                frame = await websocket.receive()
        except TimeoutError:
            await websocket.close(code=1000, reason="idle")
            return
        if frame["type"] == "websocket.disconnect":
            return
        now = last = time.monotonic()
        if not rate.allow(now):
            if rate.over > rate.limit:
                await websocket.close(code=POLICY_VIOLATION, reason="too many messages")
                return
            if rate.over == 1:
                await websocket.send_text(
                    wire.error(f"too many messages: at most {rate.limit} a minute")
                )
            continue
        text = frame.get("text")
        try:
            if text is None:
                raise wire.CompanionError("binary frames are not part of this protocol")
            message = wire.parse_message(
                text, max_bytes=settings.max_message_bytes, default_voice=base.voice
            )
        except wire.CompanionError as exc:
            await websocket.send_text(wire.error(str(exc)))
            continue
        match message:
            case wire.Auth():
                auth = message
            case wire.StartRealtime() if auth is None:
                await websocket.send_text(wire.error("send auth {userId, conversationId} first"))
            case wire.StartRealtime() if auth is not None:
                refusal = _start_refusal(services, registry, auth.user_id)
                if refusal is not None:
                    registry.refused += 1
                    await websocket.send_text(wire.error(refusal))
                    continue
                live = LiveSession(
                    client_id, auth.user_id, auth.conversation_id, datetime.now(UTC), now, now
                )
                leg = CompanionLeg(
                    websocket,
                    live=live,
                    registry=registry,
                    rate=rate,
                    gain=message.voice.volume,
                    max_bytes=settings.max_message_bytes,
                    idle_timeout_s=settings.companion_idle_timeout_s,
                    default_voice=base.voice,
                )
                await _run(services, registry, leg, wire.companion_agent(base, message), message)
                return
            case _:
                await websocket.send_text(wire.error("send auth, then start_realtime, first"))


def _start_refusal(services: Services, registry: CompanionSessions, user_id: str) -> str | None:
    if services.model_unreachable:
        return "Service temporarily unavailable"
    if registry.user_full(user_id):
        return f"too many sessions for this user (at most {registry.max_per_user})"
    if services.at_capacity or services.draining:
        return "the server is busy; try again later"
    return None


async def _run(
    services: Services,
    registry: CompanionSessions,
    leg: CompanionLeg,
    agent: Agent,
    start: wire.StartRealtime,
) -> None:
    settings = services.settings
    live = leg.live
    call = Call.for_leg(
        agent=agent,
        call_sid=history.call_sid(live.user_id, live.conversation_id),
        codec="pcm16",
        rate=wire.RATE,
        lead_ms=settings.playout_lead_ms,
        uplink_batch_ms=settings.uplink_batch_ms,
        now=time.monotonic(),
        echoes_marks=False,
    )
    earlier = await history.earlier_turns(
        services, live.user_id, live.conversation_id, settings.companion_history_turns
    )
    call.continue_from(earlier)
    leg.model, leg.voice, leg.warnings = (
        settings.openai_realtime_model,
        agent.voice,
        start.voice.warnings,
    )
    for warning in leg.warnings:
        logger.warning("companion %s: %s", live.client_id, warning)
    live.session_id = call.call_sid
    registry.started(live)
    logger.info(
        "companion %s: session %s started (%d earlier turns)",
        live.client_id,
        call.call_sid,
        len(earlier),
    )
    normal = False
    try:
        ending = await services.run_call(call, leg, leg_name=LEG, observers=[leg.observe])
        normal = ending.normal
    finally:
        registry.ended_(live.client_id, time.monotonic(), normal=normal)


def _token_refusal(websocket: WebSocket, settings: Settings) -> str | None:
    expected = settings.softphone_token
    if not expected:
        if settings.uses_local_agent:
            return None
        return "this endpoint is off: set SOFTPHONE_TOKEN on the server"
    given = websocket.query_params.get("token") or _bearer(websocket.headers.get("authorization"))
    if not given:
        return "unauthorized: a connect token is required"
    if not _same(given, expected):
        return "unauthorized: the connect token is not valid"
    return None


def _admin_ok(request: Request, token: str | None) -> bool:
    if not token:
        return True
    given = _bearer(request.headers.get("authorization"))
    return given is not None and _same(given, token)


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _same_origins(websocket: WebSocket, settings: Settings) -> list[str]:
    """The server's own origins: from the Host (and forwarded) headers and PUBLIC_URL."""
    scheme = {"ws": "http", "wss": "https"}.get(websocket.url.scheme, websocket.url.scheme)
    origins = []
    for host in (websocket.headers.get("host"), websocket.headers.get("x-forwarded-host")):
        if host:
            host = host.split(",")[0].strip()
            origins.append(f"{scheme}://{host}")
            if forwarded := websocket.headers.get("x-forwarded-proto"):
                origins.append(f"{forwarded.split(',')[0].strip()}://{host}")
    if settings.public_url and (public := origin_of(settings.public_url)):
        origins.append(public)
    return origins
