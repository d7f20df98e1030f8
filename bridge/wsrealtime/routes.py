"""``WS /ws/realtime``: mint ephemeral Realtime client secrets and synthesise speech.

Admission is the raw PCM route's (``bridge.wsvoice.routes``): origin allow-list (403),
connection rate, and the softphone's token, required whenever a real key is set, so no
secret is minted and no speech made for a stranger. Each request is then checked
(``protocol``), counted against the connection's budget, and sent to the REST API
(``OPENAI_BASE_URL`` with the server's key, or the local agent's endpoints without one);
the key itself never leaves the server. One connection's failures never touch another's.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from typing import Any

import httpx
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.errors import PhoneProtocolError
from bridge.leg import POLICY_VIOLATION
from bridge.services import Services
from bridge.softphone.admission import admit, bearer_token
from bridge.softphone.protocol import Refused
from bridge.wsrealtime import protocol
from bridge.wsrealtime.rest import RestError, mint_client_secret, speech
from bridge.wsvoice.leg import scope_environ
from bridge.wsvoice.protocol import parse_options
from bridge.wsvoice.routes import deny

logger = logging.getLogger(__name__)


def ws_realtime_routes(services: Services) -> list[BaseRoute]:
    async def realtime(websocket: WebSocket) -> None:
        try:
            agent = _admit(websocket, services)
        except Refused as exc:
            logger.warning("wsrealtime: refused: %s", exc.code)
            await deny(websocket, exc)
            return
        await websocket.accept()
        async with httpx.AsyncClient() as client:
            await _serve(websocket, services, agent, client)

    return [WebSocketRoute("/ws/realtime", realtime)]


def _admit(websocket: WebSocket, services: Services) -> Agent:
    environ = scope_environ(websocket)
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    params = parse_options(query, services.settings)
    admit(environ, params.token or bearer_token(environ) or "", services, what="wsrealtime")
    return params.agent


async def _serve(
    websocket: WebSocket, services: Services, agent: Agent, client: httpx.AsyncClient
) -> None:
    settings = services.settings
    base_url = (services.api_url or settings.openai_base_url).rstrip("/")
    key = settings.openai_api_key or "local"
    budget = protocol.RequestBudget(time.monotonic())
    bad = 0
    await websocket.send_text(protocol.status("connected", agent=agent.name))
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        try:
            request = protocol.parse_request(message.get("text", message.get("bytes")))
            if not budget.take(time.monotonic()):
                raise PhoneProtocolError("too many requests: slow down")
        except PhoneProtocolError as exc:
            bad += 1
            if bad > protocol.MAX_BAD:
                with contextlib.suppress(Exception):
                    await websocket.close(code=POLICY_VIOLATION, reason="too many bad messages")
                return
            await websocket.send_text(protocol.error(str(exc)))
            continue
        working = "minting" if isinstance(request, protocol.SessionRequest) else "synthesizing"
        try:
            await websocket.send_text(protocol.status(working))
            reply = await _answer(request, client, base_url, key, agent, services)
        except RestError as exc:
            logger.warning("wsrealtime: %s", exc)
            reply = protocol.error(str(exc))
        except (WebSocketDisconnect, RuntimeError):
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.send_text(reply)


async def _answer(
    request: protocol.Request,
    client: httpx.AsyncClient,
    base_url: str,
    key: str,
    agent: Agent,
    services: Services,
) -> str:
    settings = services.settings
    if isinstance(request, protocol.SessionRequest):
        session = request.session or _agent_session(agent)
        session = {"type": "realtime", "model": settings.openai_realtime_model, **session}
        minted = await mint_client_secret(client, base_url, key, session, request.expires_in)
        return protocol.session_response(minted, services.model_url)
    voice = request.voice or agent.voice
    audio = await speech(client, base_url, key, request.text, voice, request.format)
    return protocol.tts_response(base64.b64encode(audio).decode("ascii"), request.format)


def _agent_session(agent: Agent) -> dict[str, Any]:
    """The agent's own session configuration, as calls get it."""
    session: dict[str, Any] = rt.session_update(agent)["session"]
    return session
