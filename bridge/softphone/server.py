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
* ``SOFTPHONE_TOKEN``, when set, must come with the connect ``auth`` (or query, or an
  ``Authorization: Bearer`` header); both checks are ``bridge.softphone.admission``'s;
* a connection that drops may be resumed within ``SOCKETIO_RESUME_GRACE_S``
  (``bridge.softphone.resume``): the ``connected`` status carries the resume id;
* ``SOFTPHONE_MAX_SESSIONS`` live sessions (and the bridge-wide ``MAX_CALLS``);
* message size: ``MAX_MESSAGE_BYTES`` per audio message (dropped with an ``error``), and a
  hard transport limit of four times that (the connection is cut);
* ``SOFTPHONE_IDLE_TIMEOUT_S`` and the inbox/backlog bounds live in ``SoftphoneLeg``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import socketio
from engineio.payload import Payload

from bridge.background import spawn
from bridge.call import Call
from bridge.errors import PhoneProtocolError
from bridge.guard import connect_allowed
from bridge.services import Services
from bridge.softphone.admission import origin_ok, with_bearer
from bridge.softphone.leg import SoftphoneLeg
from bridge.softphone.pages import PagesApp
from bridge.softphone.protocol import (
    NAMESPACE,
    ClearIn,
    ConnectParams,
    HangupIn,
    Refused,
    TextIn,
    error_payload,
    parse_client_event,
    parse_connect,
)
from bridge.softphone.resume import Link, Sessions

if TYPE_CHECKING:
    from bridge.chat.gateway import ChatGateway

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
    link: Link
    resume_id: str | None = None
    task: asyncio.Task[None] | None = None
    bad_messages: int = 0
    started: float = field(default_factory=time.monotonic)


class Softphone:
    """The ``/softphone`` namespace: admission, event handlers, live sessions."""

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.live: Sessions[_Session] = Sessions(settings.socketio_resume_grace_s)
        self.chat: ChatGateway | None = None  # /chat/v1 on the same server (with_softphone)
        self.proxy: Any = None  # the raw Realtime proxy on "/" (bridge.proxy.namespace)
        self.refused = 0  # connections refused since start (logged flood-proof)
        self.tasks: set[asyncio.Task[None]] = set()  # resumes under way
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            # REDIS_URL: an emit on any instance reaches a browser connected to another.
            client_manager=(
                socketio.AsyncRedisManager(settings.redis_url, channel="bridge-socketio")
                if settings.redis_url
                else None
            ),
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

    @property
    def sessions(self) -> dict[str, _Session]:
        """The sessions attached to a connection, by its id."""
        return self.live.by_sid()

    def _origin_ok(self, environ: dict[str, Any]) -> bool:
        return origin_ok(environ, self.services.settings)

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
        client = environ.get("asgi.scope", {}).get("client") or ("?",)
        if not connect_allowed(services, str(client[0]), "softphone connection"):
            raise Refused("rate_limited", "too many new connections; try again shortly")
        query = environ.get("QUERY_STRING", "")
        params = parse_connect(with_bearer(auth, environ), query, settings)
        if self.live.known(params.resume):
            return params  # its call is running already
        if len(self.live) >= settings.softphone_max_sessions or services.at_capacity:
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
        if (resumed := self.live.resume(params.resume, sid)) is not None:
            session, old_sid = resumed
            logger.info("softphone %s: resumed on a new connection", session.call.call_sid)
            # Nothing awaited here: the page gets its CONNECT before the status, which it
            # may answer at once (a Socket.IO client can only send once connected).
            spawn(self.tasks, self._resumed(session, old_sid))
            return
        settings = self.services.settings
        rate = params.sample_rate
        call_sid = "SP" + secrets.token_hex(16)
        link = Link(self.sio, NAMESPACE, sid)
        leg = SoftphoneLeg(
            link.emit,
            link.disconnect,
            session_id=call_sid,
            sample_rate=rate,
            metrics=self.services.metrics,
            idle_timeout_s=settings.softphone_idle_timeout_s,
            max_inbox=MAX_INBOX,
            max_backlog=MAX_BACKLOG_PACKETS,
            backlog=link.backlog,
        )
        call = Call.for_leg(
            agent=params.agent,
            call_sid=call_sid,
            codec="pcm16",
            rate=rate,
            lead_ms=settings.playout_lead_ms,
            uplink_batch_ms=settings.uplink_batch_ms,
            now=time.monotonic(),
        )
        session = _Session(leg, call, link)
        session.resume_id = params.resume
        self.live.add(
            sid,
            session,
            link,
            resume_id=params.resume,
            on_detach=lambda: self._detached(session),
            on_expire=leg.disconnected,
        )
        # Runs after this handler returns, so the client has its CONNECT before any event.
        session.task = asyncio.create_task(self._run(session), name=f"softphone {call_sid}")
        logger.info(
            "softphone %s: connected (agent %s, %d Hz, %d live sessions)",
            call_sid,
            params.agent.name,
            rate,
            len(self.live),
        )

    def _connected(self, session: _Session) -> dict[str, Any]:
        return {
            "state": "connected",
            "session": session.call.call_sid,
            "agent": session.call.agent.name,
            "sample_rate": session.leg.sample_rate,
            "resume": session.resume_id,
        }

    async def _resumed(self, session: _Session, old_sid: str | None) -> None:
        """A client took its session up again on a new connection."""
        if old_sid is not None:
            await self.sio.disconnect(old_sid, namespace=NAMESPACE)
        await session.link.emit("status", {**self._connected(session), "resumed": True})
        if session.call.model_ready:
            await session.link.emit(
                "status", {"state": "agent-ready", "agent": session.call.agent.name}
            )

    @staticmethod
    def _detached(session: _Session) -> None:
        """The connection dropped: stop the agent's speech nobody hears (truncated there)."""
        if session.call.playout.active:
            session.leg.offer(ClearIn())

    async def _run(self, session: _Session) -> None:
        call, leg = session.call, session.leg
        try:
            await session.link.emit("status", self._connected(session))
            await self.services.run_call(call, leg, leg_name="softphone", observers=[leg.observe])
        except Exception:
            logger.exception("softphone %s: session failed", call.call_sid)
            await leg.close("internal error")
        finally:
            self.live.ended(session)

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        self.live.lost(sid, str(reason or "closed"))

    # ------------------------------------------------------------------ client events

    def _handler(self, event: str) -> Any:
        async def handle(sid: str, data: object = None) -> dict[str, Any] | None:
            return await self._on_event(event, sid, data)

        return handle

    async def _on_other(self, event: str, sid: str, data: object = None) -> dict[str, Any]:
        return await self._on_event(event, sid, data) or {}

    async def _on_event(self, event: str, sid: str, data: object) -> dict[str, Any] | None:
        session = self.live.get(sid)
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

    async def aclose(self) -> None:
        """At shutdown: stop the Redis manager's listener and close its connections."""
        manager = self.sio.manager
        listener = getattr(manager, "thread", None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        for connection in (getattr(manager, "pubsub", None), getattr(manager, "redis", None)):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.aclose()

    async def _emit(self, sid: str, event: str, data: Any) -> None:
        await self.sio.emit(event, data, to=sid, namespace=NAMESPACE)


class SoftphoneApp(socketio.ASGIApp):  # type: ignore[misc]
    """The bridge's ASGI app with the softphone in front; ``.softphone`` for tests."""

    def __init__(self, softphone: Softphone, other_asgi_app: Any) -> None:
        super().__init__(softphone.sio, other_asgi_app=other_asgi_app, socketio_path="socket.io")
        self.softphone = softphone


def with_softphone(app: Any, services: Services) -> SoftphoneApp:
    """Wrap ``app``: Socket.IO at /socket.io/, the page at /softphone, the rest to ``app``."""
    softphone = Softphone(services)
    # The /chat/v1 gateway shares this server; imported here as it builds on this package.
    from bridge.chat.gateway import ChatGateway

    softphone.chat = ChatGateway(softphone.sio, services)
    # The raw Realtime proxy takes the default namespace "/" of the same server.
    from bridge.proxy.namespace import RealtimeProxy

    softphone.proxy = RealtimeProxy(softphone.sio, services)
    return SoftphoneApp(softphone, PagesApp(services.settings, other_asgi_app=app))
