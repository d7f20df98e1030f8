"""The ``/chat/v1`` namespace on the bridge's Socket.IO server: admission, handlers, sessions.

``ChatGateway(sio, services)`` registers its handlers on the softphone's ``AsyncServer``
(``bridge.softphone.server.with_softphone`` does it), so it shares its transport limits
(message size, ping) and its admission (``bridge.softphone.admission``: origins,
``SOFTPHONE_TOKEN``, the per-address connection rate). Each connection is one ``Call`` on
the shared core, made with ``echoes_marks=False``, run by ``Services.run_call`` with a
``ChatLeg`` under the leg name ``chat``.

A dropped connection may be resumed within ``SOCKETIO_RESUME_GRACE_S``
(``bridge.softphone.resume``). Bad input gets ``error`` ``{message, code}`` and is dropped;
a client that keeps sending it (``MAX_BAD_MESSAGES``) is disconnected. None of it reaches
another session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import socketio

from bridge.background import spawn
from bridge.call import Call
from bridge.chat.leg import ChatLeg
from bridge.chat.protocol import (
    NAMESPACE,
    AudioIn,
    ChatConnect,
    ClearIn,
    error_out,
    parse_client_event,
    parse_connect,
)
from bridge.errors import PhoneProtocolError
from bridge.services import Services
from bridge.softphone.admission import admit, with_bearer
from bridge.softphone.protocol import Refused, connect_fields
from bridge.softphone.resume import Link, Sessions

logger = logging.getLogger(__name__)

LOGGED = 10  # refusals and bad messages logged one by one, then every 1000th
MAX_BAD_MESSAGES = 200  # per session, then the client is disconnected
MAX_INBOX = 100  # client messages waiting for the Call (a second of 20 ms frames)
MAX_BACKLOG_PACKETS = 100  # packets queued for a slow client before audio is dropped


@dataclass
class _Session:
    leg: ChatLeg
    call: Call
    link: Link
    resume_id: str | None = None
    bad_messages: int = 0
    dropped: int = 0


class ChatGateway:
    def __init__(self, sio: socketio.AsyncServer, services: Services) -> None:
        self.sio = sio
        self.services = services
        self.live: Sessions[_Session] = Sessions(services.settings.socketio_resume_grace_s)
        self.refused = 0
        self.tasks: set[asyncio.Task[None]] = set()
        sio.on("connect", self._on_connect, namespace=NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        for event in ("audio", "text", "clear"):
            sio.on(event, self._handler(event), namespace=NAMESPACE)
        sio.on("*", self._on_other, namespace=NAMESPACE)

    # ------------------------------------------------------------------ connect

    def _admit(self, environ: dict[str, Any], auth: object) -> ChatConnect:
        services = self.services
        fields = connect_fields(with_bearer(auth, environ), environ.get("QUERY_STRING", ""))
        admit(environ, fields.get("token", ""), services, what="chat connection")
        params = parse_connect(fields, services.settings)
        if self.live.known(params.resume):
            return params  # its call is running already
        if len(self.live) >= services.settings.softphone_max_sessions or services.at_capacity:
            raise Refused("busy", "all lines are busy; try again later")
        return params

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: object) -> None:
        try:
            params = self._admit(environ, auth)
        except Refused as exc:
            self.refused += 1
            if self.refused <= LOGGED or self.refused % 1000 == 0:
                logger.warning(
                    "chat connection refused (%d so far): %s: %s",
                    self.refused,
                    exc.code,
                    exc.message,
                )
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        if (resumed := self.live.resume(params.resume, sid)) is not None:
            session, old_sid = resumed
            logger.info("chat %s: resumed on a new connection", session.call.call_sid)
            # Nothing awaited here: the client gets its CONNECT before the status, which it
            # may answer at once (a Socket.IO client can only send once connected).
            spawn(self.tasks, self._resumed(session, old_sid), f"chat {session.call.call_sid}")
            return
        settings = self.services.settings
        agent = settings.agent(params.agent_name)
        assert agent is not None  # parse_connect checked it
        call_sid = "CH" + secrets.token_hex(16)
        link = Link(self.sio, NAMESPACE, sid)
        leg = ChatLeg(
            link.emit,
            link.disconnect,
            session_id=call_sid,
            sample_rate=params.sample_rate,
            metrics=self.services.metrics,
            idle_timeout_s=settings.softphone_idle_timeout_s,
            max_inbox=MAX_INBOX,
            max_backlog=MAX_BACKLOG_PACKETS,
            backlog=link.backlog,
        )
        call = Call.for_leg(
            agent=agent,
            call_sid=call_sid,
            codec="pcm16",
            rate=params.sample_rate,
            lead_ms=settings.playout_lead_ms,
            uplink_batch_ms=settings.uplink_batch_ms,
            now=time.monotonic(),
            echoes_marks=False,
        )
        session = _Session(leg, call, link)
        session.resume_id = params.resume
        self.live.add(
            sid,
            session,
            link,
            resume_id=params.resume,
            on_detach=lambda: _detached(session),
            on_expire=leg.disconnected,
        )
        # Runs after this handler returns, so the client has its CONNECT before any event.
        spawn(self.tasks, self._run(session), f"chat {call_sid}")
        logger.info(
            "chat %s: connected (agent %s, %d Hz, %d live sessions)",
            call_sid,
            agent.name,
            params.sample_rate,
            len(self.live),
        )

    @staticmethod
    def _connected(session: _Session) -> dict[str, Any]:
        return {
            "state": "connected",
            "session": session.call.call_sid,
            "agent": session.call.agent.name,
            "resume": session.resume_id,
        }

    async def _resumed(self, session: _Session, old_sid: str | None) -> None:
        if old_sid is not None:  # the old connection, if the server still thinks it open
            await self.sio.disconnect(old_sid, namespace=NAMESPACE)
        await session.link.emit("status", {**self._connected(session), "resumed": True})

    async def _run(self, session: _Session) -> None:
        call, leg = session.call, session.leg
        try:
            await session.link.emit("status", self._connected(session))
            await self.services.run_call(call, leg, leg_name="chat", observers=[leg.observe])
        except Exception:
            logger.exception("chat %s: session failed", call.call_sid)
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
            return {"ok": False, "error": {"message": "no call", "code": "not_connected"}}
        try:
            message = parse_client_event(
                event, data, max_bytes=self.services.settings.max_message_bytes
            )
        except PhoneProtocolError as exc:
            error = error_out(exc)
            await self._bad_message(sid, session, error)
            return {"ok": False, "error": error}
        if session.leg.offer_chat(message):
            return None if isinstance(message, AudioIn) else {"ok": True}
        if session.leg.ending:
            return {"ok": False, "error": {"message": "the call is over", "code": "ended"}}
        session.dropped += 1
        error = {"message": "the call is not keeping up; message dropped", "code": "overloaded"}
        if session.dropped == 1 or session.dropped % 50 == 0:
            await session.link.emit("error", error)
        return {"ok": False, "error": error}

    async def _bad_message(self, sid: str, session: _Session, error: dict[str, str]) -> None:
        self.services.metrics.frames_dropped += 1
        session.bad_messages += 1
        n = session.bad_messages
        if n <= LOGGED or n % 1000 == 0:
            logger.warning(
                "chat %s: dropped message (%d so far): %s: %s",
                session.call.call_sid,
                n,
                error["code"],
                error["message"],
            )
        await session.link.emit("error", error)
        if n >= MAX_BAD_MESSAGES:
            await session.link.emit(
                "error", {"message": "too many bad messages; disconnecting", "code": "flood"}
            )
            await self.sio.disconnect(sid, namespace=NAMESPACE)


def _detached(session: _Session) -> None:
    """The connection dropped: stop the agent's speech nobody hears (truncated there)."""
    if session.call.playout.active:
        session.leg.offer_chat(ClearIn())
