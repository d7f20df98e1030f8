"""The Socket.IO server of the browser softphone, mounted in the bridge's ASGI app.

``with_softphone(app, services)`` wraps the Starlette app: ``/socket.io/`` goes to a
python-socketio ``AsyncServer`` (WebSocket, with long-polling as the fallback),
``/softphone…`` to the page (``bridge.softphone.pages``), everything else (and the
lifespan) to ``app``, which stays reachable as ``.other_asgi_app``.

Each connection to the ``/softphone`` namespace is one ``Call`` on the shared core, run by
``Services.run_call`` with a ``SoftphoneLeg``. This module owns admission and limits:

* origin: the page's own origin, plus those listed in ``SOFTPHONE_ALLOWED_ORIGINS``
  (never ``*`` unless listed). Checked at connect so the refusal carries a reason the page
  can show; long-polling from a refused origin also gets no CORS headers;
* ``SOFTPHONE_TOKEN``, when set, must come with the connect ``auth`` (or query);
* ``SOFTPHONE_MAX_SESSIONS`` live sessions (and the bridge-wide ``MAX_CALLS``);
* message size: ``MAX_MESSAGE_BYTES`` per audio message (dropped with an ``error``), and a
  hard transport limit of four times that (the connection is cut);
* ``SOFTPHONE_IDLE_TIMEOUT_S`` and the inbox/backlog bounds live in ``SoftphoneLeg``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import socketio
from engineio.payload import Payload

from bridge.call import Call
from bridge.errors import PhoneProtocolError
from bridge.services import Services
from bridge.softphone.leg import SoftphoneLeg
from bridge.softphone.pages import PagesApp
from bridge.softphone.protocol import (
    NAMESPACE,
    ClearIn,
    ConnectParams,
    HangupIn,
    Refused,
    TextIn,
    allowed_origin,
    error_payload,
    origin_of,
    parse_client_event,
    parse_connect,
)

logger = logging.getLogger(__name__)

LOGGED_BAD_MESSAGES = 10
# Packets waiting in the transport for one browser before agent audio is dropped:
# about two seconds of audio (a 40 ms chunk and its mark are two packets).
MAX_BACKLOG_PACKETS = 100
# Client messages waiting for the Call: a second of 20 ms microphone frames, plus marks.
MAX_INBOX = 100
# Long-polling batches whatever the browser queued into one POST; Engine.IO refuses a POST
# of more than 16 packets by default (half a second of audio with binary attachments).
# The body stays capped by ``max_http_buffer_size``. A class attribute: the documented
# way (https://github.com/miguelgrinberg/python-engineio/issues/142).
Payload.max_decode_packets = max(Payload.max_decode_packets, 512)


@dataclass
class _Session:
    leg: SoftphoneLeg
    call: Call
    task: asyncio.Task[None] | None = None
    bad_messages: int = 0
    started: float = field(default_factory=time.monotonic)


class Softphone:
    """The ``/softphone`` namespace: admission, event handlers, live sessions."""

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.sessions: dict[str, _Session] = {}
        self.refused = 0  # connections refused since start (logged flood-proof)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            namespaces=[NAMESPACE],
            # Engine.IO checks the origin of long-polling requests (and sets CORS headers);
            # WebSockets pass here and are checked at connect, where a refusal has a reason.
            cors_allowed_origins=self._transport_origin_ok,
            max_http_buffer_size=4 * settings.max_message_bytes,
            # Events of one browser are handled in order (audio frames must stay ordered).
            async_handlers=False,
            ping_interval=10,
            ping_timeout=20,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        for event in ("audio", "text", "mark", "clear", "hangup"):
            self.sio.on(event, self._handler(event), namespace=NAMESPACE)
        self.sio.on("*", self._on_other, namespace=NAMESPACE)

    # ------------------------------------------------------------------ admission

    def _same_origins(self, environ: dict[str, Any]) -> list[str]:
        scope = environ.get("asgi.scope", {})
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme"), scope.get("scheme"))
        origins = []
        for host in (environ.get("HTTP_HOST"), environ.get("HTTP_X_FORWARDED_HOST")):
            if host:
                host = host.split(",")[0].strip()
                origins.append(f"{scheme or 'http'}://{host}")
                forwarded = environ.get("HTTP_X_FORWARDED_PROTO")
                if forwarded:
                    origins.append(f"{forwarded.split(',')[0].strip()}://{host}")
        public = self.services.settings.public_url
        if public and (public_origin := origin_of(public)):
            origins.append(public_origin)
        return origins

    def _origin_ok(self, environ: dict[str, Any]) -> bool:
        return allowed_origin(
            environ.get("HTTP_ORIGIN"),
            configured=self.services.settings.softphone_allowed_origins,
            same_origin=self._same_origins(environ),
        )

    def _transport_origin_ok(self, origin: str | None, environ: dict[str, Any]) -> bool:
        if environ.get("asgi.scope", {}).get("type") == "websocket":
            return True
        return self._origin_ok(environ)

    def _admit(self, environ: dict[str, Any], auth: object) -> ConnectParams:
        services = self.services
        settings = services.settings
        if services.draining:
            raise Refused("draining", "the server is shutting down; try again shortly")
        if not self._origin_ok(environ):
            origin = str(environ.get("HTTP_ORIGIN"))[:100]
            raise Refused(
                "origin_not_allowed",
                f"pages from {origin} may not use this softphone (see SOFTPHONE_ALLOWED_ORIGINS)",
            )
        params = parse_connect(auth, environ.get("QUERY_STRING", ""), settings)
        if len(self.sessions) >= settings.softphone_max_sessions or services.at_capacity:
            raise Refused("busy", "all lines are busy; try again later")
        return params

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: object) -> None:
        try:
            params = self._admit(environ, auth)
        except Refused as exc:
            self.refused += 1
            if self.refused <= LOGGED_BAD_MESSAGES or self.refused % 1000 == 0:
                logger.warning(
                    "softphone connection refused (%d so far): %s: %s",
                    self.refused,
                    exc.code,
                    exc.message,
                )
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        settings = self.services.settings
        rate = params.sample_rate
        call_sid = "SP" + secrets.token_hex(16)
        leg = SoftphoneLeg(
            self._emitter(sid),
            self._disconnector(sid),
            session_id=call_sid,
            sample_rate=rate,
            metrics=self.services.metrics,
            idle_timeout_s=settings.softphone_idle_timeout_s,
            max_inbox=MAX_INBOX,
            max_backlog=MAX_BACKLOG_PACKETS,
            backlog=self._backlog_of(sid),
        )
        call = Call.for_leg(
            agent=params.agent,
            call_sid=call_sid,
            codec="pcm16",
            rate=rate,
            lead_ms=settings.playout_lead_ms,
            now=time.monotonic(),
        )
        session = _Session(leg, call)
        self.sessions[sid] = session
        # Runs after this handler returns, so the client has its CONNECT before any event.
        session.task = asyncio.create_task(self._run(sid, session), name=f"softphone {call_sid}")
        logger.info(
            "softphone %s: connected (agent %s, %d Hz, %d live sessions)",
            call_sid,
            params.agent.name,
            rate,
            len(self.sessions),
        )

    async def _run(self, sid: str, session: _Session) -> None:
        call, leg = session.call, session.leg
        try:
            await self._emit(
                sid,
                "status",
                {
                    "state": "connected",
                    "session": call.call_sid,
                    "agent": call.agent.name,
                    "sample_rate": leg.sample_rate,
                },
            )
            await self.services.run_call(call, leg, leg_name="softphone", observers=[leg.observe])
        except Exception:
            logger.exception("softphone %s: session failed", call.call_sid)
            await leg.close("internal error")
        finally:
            self.sessions.pop(sid, None)

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        session = self.sessions.get(sid)
        if session is not None:
            session.leg.disconnected(str(reason or "closed"))

    # ------------------------------------------------------------------ client events

    def _handler(self, event: str) -> Any:
        async def handle(sid: str, data: object = None) -> dict[str, Any] | None:
            return await self._on_event(event, sid, data)

        return handle

    async def _on_other(self, event: str, sid: str, data: object = None) -> dict[str, Any]:
        return await self._on_event(event, sid, data) or {}

    async def _on_event(self, event: str, sid: str, data: object) -> dict[str, Any] | None:
        session = self.sessions.get(sid)
        if session is None:
            return {"ok": False, "error": {"code": "not_connected", "message": "no call"}}
        leg = session.leg
        try:
            message = parse_client_event(
                event,
                data,
                sample_rate=leg.sample_rate,
                max_bytes=self.services.settings.max_message_bytes,
            )
        except PhoneProtocolError as exc:
            error = error_payload(exc)
            self._bad_message(session, error)
            await self._emit(sid, "error", error)
            return {"ok": False, "error": error}
        accepted = leg.offer(message)
        if isinstance(message, TextIn | ClearIn | HangupIn):
            if accepted:
                return {"ok": True}
            if leg.ending:
                return {"ok": False, "error": {"code": "ended", "message": "the call is over"}}
            error = {"code": "overloaded", "message": "the call is not keeping up; try again"}
            return {"ok": False, "error": error}
        return None

    def _bad_message(self, session: _Session, error: dict[str, str]) -> None:
        self.services.metrics.frames_dropped += 1
        session.bad_messages += 1
        n = session.bad_messages
        if n <= LOGGED_BAD_MESSAGES:
            logger.warning(
                "softphone %s: dropped message: %s: %s",
                session.call.call_sid,
                error["code"],
                error["message"],
            )
        elif n == LOGGED_BAD_MESSAGES + 1 or n % 1000 == 0:
            logger.warning("softphone %s: %d bad messages dropped so far", session.call.call_sid, n)

    # ------------------------------------------------------------------ plumbing

    async def _emit(self, sid: str, event: str, data: Any) -> None:
        await self.sio.emit(event, data, to=sid, namespace=NAMESPACE)

    def _emitter(self, sid: str) -> Any:
        async def emit(event: str, data: Any) -> None:
            await self._emit(sid, event, data)

        return emit

    def _disconnector(self, sid: str) -> Any:
        async def disconnect() -> None:
            await self.sio.disconnect(sid, namespace=NAMESPACE)

        return disconnect

    def _backlog_of(self, sid: str) -> Any:
        """Packets queued in Engine.IO for this browser (what a slow reader piles up)."""

        def backlog() -> int:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
            socket = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
            queue = getattr(socket, "queue", None)
            return queue.qsize() if queue is not None else 0

        return backlog


class SoftphoneApp(socketio.ASGIApp):  # type: ignore[misc]
    """The bridge's ASGI app with the softphone in front; ``.softphone`` for tests."""

    def __init__(self, softphone: Softphone, other_asgi_app: Any) -> None:
        super().__init__(softphone.sio, other_asgi_app=other_asgi_app, socketio_path="socket.io")
        self.softphone = softphone


def with_softphone(app: Any, services: Services) -> SoftphoneApp:
    """Wrap ``app``: Socket.IO at /socket.io/, the page at /softphone, the rest to ``app``."""
    softphone = Softphone(services)
    return SoftphoneApp(softphone, PagesApp(services.settings, other_asgi_app=app))
