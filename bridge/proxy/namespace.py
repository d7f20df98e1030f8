"""The raw Realtime proxy: the default Socket.IO namespace ``/`` on the bridge's server.

``RealtimeProxy(sio, services)`` registers its handlers on the softphone's
``AsyncServer`` (``bridge.softphone.server.with_softphone`` does it), sharing its
transport limits and its admission (``bridge.softphone.admission``: origins,
``SOFTPHONE_TOKEN`` as ``auth.token``, ``token`` query or ``Authorization: Bearer``,
required whenever a real OpenAI key is set; the per-address connection rate).

Each connection relays Realtime events between its client and one model session (OpenAI,
or the local agent): ``realtime-message`` (a JSON client event, object or text) and
``realtime-audio`` (binary PCM16 24 kHz, sent on as ``input_audio_buffer.append``) in;
``realtime-response`` (each server event; agent audio as binary with ``audio=binary``)
and ``realtime-error`` (``{code, message, event_type?}``: a refused event) out. Beta
clients are translated both ways (``bridge.proxy.translate``); what passes is decided by
``bridge.proxy.rules``. The model session opens with the first accepted event, so a
client that is refused everything costs nothing. A model event the proxy cannot decode or
deliver (a shape nothing here expected) is skipped with a warning; the session goes on.
It is no Call: it counts in the metrics (leg ``realtime_proxy``), ``MAX_CALLS`` and the
call records all the same.

Connect options (``auth`` or query): ``agentId``, ``protocol`` (``beta``, ``ga``; by
default told from the first session event, beta until then), ``audio`` (``json`` or
``binary``), ``resume`` (``bridge.softphone.resume``: a dropped connection takes up the
same model session within ``SOCKETIO_RESUME_GRACE_S``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import socketio
from websockets.asyncio.client import ClientConnection

from bridge.agents import Agent
from bridge.ai.events import session_update
from bridge.background import spawn
from bridge.proxy import record
from bridge.proxy.rules import RateCap, Refusal, check_event_type, check_response, restrict_session
from bridge.proxy.translate import (
    Protocol,
    TranslationError,
    client_to_ga,
    detect_protocol,
    server_to_beta,
)
from bridge.services import Services
from bridge.softphone.admission import admit, with_bearer
from bridge.softphone.protocol import Refused, connect_fields, resume_id
from bridge.softphone.resume import Link, Sessions
from bridge.store.recorder import CallRecorder
from bridge.timeline import CallEvent

logger = logging.getLogger(__name__)

NAMESPACE = "/"
LEG = "realtime_proxy"
CONNECT_KEYS = ("agentId", "token", "protocol", "audio", "resume")
LOGGED = 10  # refusals logged one by one, then every 1000th
MAX_REFUSALS = 200  # per session, then the client is disconnected


@dataclass(eq=False)
class _Session:
    id: str
    agent: Agent
    link: Link
    protocol: Protocol | None
    binary_audio: bool
    cap: RateCap
    started: float = field(default_factory=time.monotonic)
    recorder: CallRecorder | None = None
    model: ClientConnection | None = None
    pump: asyncio.Task[None] | None = None
    refusals: int = 0
    skipped: int = 0  # model events that could not be delivered
    ended: bool = False
    failed: bool = False
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)


class RealtimeProxy:
    def __init__(self, sio: socketio.AsyncServer, services: Services) -> None:
        self.sio = sio
        self.services = services
        self.live: Sessions[_Session] = Sessions(services.settings.socketio_resume_grace_s)
        self.refused = 0
        self.tasks: set[asyncio.Task[None]] = set()
        sio.on("connect", self._on_connect, namespace=NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        sio.on("realtime-message", self._on_message, namespace=NAMESPACE)
        sio.on("realtime-audio", self._on_audio, namespace=NAMESPACE)
        sio.on("*", self._on_other, namespace=NAMESPACE)

    # ------------------------------------------------------------------ connect

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: object) -> None:
        services, settings = self.services, self.services.settings
        try:
            fields = connect_fields(
                with_bearer(auth, environ), environ.get("QUERY_STRING", ""), CONNECT_KEYS
            )
            admit(environ, fields.get("token", ""), services, what="realtime proxy connection")
            name = fields.get("agentId") or settings.default_agent
            agent = settings.agent(name)
            if agent is None:
                raise Refused("unknown_agent", f"there is no agent named {name[:64]!r}")
            protocol = fields.get("protocol", "auto")
            audio = fields.get("audio", "json")
            if protocol not in ("auto", "beta", "ga") or audio not in ("json", "binary"):
                raise Refused(
                    "bad_option", "protocol must be beta, ga or auto; audio json or binary"
                )
            resume = resume_id(fields)
            if not self.live.known(resume) and (
                len(self.live) >= settings.realtime_proxy_max_sessions or services.at_capacity
            ):
                raise Refused("busy", "all lines are busy; try again later")
        except Refused as exc:
            self.refused += 1
            if self.refused <= LOGGED or self.refused % 1000 == 0:
                logger.warning(
                    "realtime proxy connection refused (%d so far): %s: %s",
                    self.refused,
                    exc.code,
                    exc.message,
                )
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        if (resumed := self.live.resume(resume, sid)) is not None:
            session, old_sid = resumed
            logger.info("realtime proxy %s: resumed on a new connection", session.id)
            if old_sid is not None:  # after this handler: the client's CONNECT comes first
                self._spawn(self.sio.disconnect(old_sid, namespace=NAMESPACE))
            return
        rate = settings.realtime_proxy_messages_per_s
        session = _Session(
            id="RP" + secrets.token_hex(16),
            agent=agent,
            link=Link(self.sio, NAMESPACE, sid),
            protocol=None if protocol == "auto" else protocol,  # type: ignore[arg-type]
            binary_audio=audio == "binary",
            cap=RateCap(rate, 2 * rate),
        )
        self.live.add(
            sid,
            session,
            session.link,
            resume_id=resume,
            on_detach=lambda: None,
            on_expire=lambda reason: self._spawn(self._close(session, reason)),
        )
        logger.info("realtime proxy %s: connected (agent %s)", session.id, agent.name)

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        self.live.lost(sid, str(reason or "closed"))

    # ------------------------------------------------------------------ client events

    async def _on_message(self, sid: str, data: object = None) -> None:
        session = self.live.get(sid)
        if session is None:
            return
        try:
            self._pace(session)
            try:
                size = len(data) if isinstance(data, str) else len(json.dumps(data))
            except (TypeError, ValueError, RecursionError):  # binary inside; nested too deep
                raise Refusal("invalid_json", "a realtime-message must be plain JSON") from None
            limit = self.services.settings.max_message_bytes
            if size > limit:
                raise Refusal(
                    "too_large",
                    f"a realtime-message may be at most {limit} bytes",
                )
            if isinstance(data, str):
                try:
                    data = json.loads(data)
                except (ValueError, RecursionError):
                    raise Refusal("invalid_json", "a realtime-message text must be JSON") from None
            event = self._admit_event(session, data)
        except Refusal as exc:
            await self._refuse(session, exc, data.get("type") if isinstance(data, dict) else None)
            return
        await self._forward(session, event)

    async def _on_audio(self, sid: str, data: object = None) -> None:
        session = self.live.get(sid)
        if session is None:
            return
        try:
            self._pace(session)
            if not isinstance(data, bytes | bytearray | memoryview):
                raise Refusal("invalid_audio", "realtime-audio must be binary PCM16 (24 kHz mono)")
            pcm = bytes(data)
            if len(pcm) % 2 or len(pcm) > self.services.settings.max_message_bytes:
                raise Refusal(
                    "invalid_audio",
                    "realtime-audio must be whole PCM16 samples, within the size cap",
                )
        except Refusal as exc:
            await self._refuse(session, exc, "realtime-audio")
            return
        self.services.metrics.frames_in += 1
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        await self._forward(session, event)

    async def _on_other(self, event: str, sid: str, data: object = None) -> None:
        session = self.live.get(sid)
        if session is not None:
            refusal = Refusal(
                "unknown_event", "send realtime-message (JSON) or realtime-audio (binary)"
            )
            await self._refuse(session, refusal, event)

    def _pace(self, session: _Session) -> None:
        if not session.cap.allow(time.monotonic()):
            raise Refusal("rate_limited", "too many messages; slow down")

    def _admit_event(self, session: _Session, data: object) -> dict[str, Any]:
        """The GA event to send for a client event, or ``Refusal``."""
        kind = check_event_type(data)
        assert isinstance(data, dict)
        if session.protocol is None:
            session.protocol = detect_protocol(data)
        event = data
        if session.protocol != "ga":
            try:
                event = client_to_ga(data)
            except TranslationError as exc:
                raise Refusal(exc.code, exc.message) from None
        elif kind == "session.create":
            event = {**data, "type": "session.update"}
        may_set = session.agent.realtime_client_may_set
        if event["type"] == "session.update":
            if not isinstance(event.get("session"), dict):
                raise Refusal("invalid_event", "session.update needs a 'session' object")
            kept, removed = restrict_session(event["session"], may_set)
            if removed:
                # The rest still applies; the client learns what was ignored.
                self._spawn(
                    session.link.emit(
                        "realtime-error",
                        Refusal(
                            "field_not_allowed",
                            "ignored session fields this agent keeps to itself: "
                            + ", ".join(removed),
                        ).payload(kind),
                    ),
                )
            event = {**event, "session": {"type": "realtime", **kept}}
        elif event["type"] == "response.create" and isinstance(event.get("response"), dict):
            check_response(event["response"], may_set)
        if session.recorder is not None:
            session.recorder.feed(record.from_client(event, self._t(session)))
        return event

    async def _refuse(self, session: _Session, refusal: Refusal, event_type: object) -> None:
        session.refusals += 1
        self.services.metrics.frames_dropped += 1
        if session.refusals <= LOGGED or session.refusals % 1000 == 0:
            logger.warning(
                "realtime proxy %s: refused: %s: %s", session.id, refusal.code, refusal.message
            )
        await session.link.emit("realtime-error", refusal.payload(event_type))
        if session.refusals >= MAX_REFUSALS:
            await session.link.disconnect()

    # ------------------------------------------------------------------ the model session

    async def _forward(self, session: _Session, event: dict[str, Any]) -> None:
        if session.ended:
            return
        if session.model is None:
            async with session.opening:
                if session.model is None and not await self._open(session):
                    return
        assert session.model is not None
        try:
            await session.model.send(json.dumps(event))
        except Exception:  # the pump sees the close and ends the session
            logger.debug("realtime proxy %s: send failed", session.id)

    async def _open(self, session: _Session) -> bool:
        services = self.services
        if services.at_capacity:
            await session.link.emit(
                "realtime-error", Refusal("busy", "all lines are busy").payload()
            )
            await session.link.disconnect()
            return False
        session.started = time.monotonic()
        services.proxied.add(session)
        services.metrics.call_started(LEG)
        if services.records is not None:
            session.recorder = CallRecorder(
                call_id=session.id, leg=LEG, agent=session.agent.name, started_at=datetime.now(UTC)
            )
        try:
            session.model = await (services.connector or services.connect_model)()
            if session.ended:  # the client left while the model session opened
                await session.model.close()
                return False
            base = session_update(session.agent)
            base["session"].pop("tools", None)  # tool calls would reach nobody but the client
            base["session"].pop("tool_choice", None)
            await session.model.send(json.dumps(base))
        except Exception as exc:
            logger.warning("realtime proxy %s: model unreachable: %s", session.id, exc)
            session.failed = True
            message = "the model cannot be reached; try again later"
            await session.link.emit(
                "realtime-error", Refusal("model_unavailable", message).payload()
            )
            await session.link.disconnect()
            await self._close(session, "model unreachable")
            return False
        session.pump = asyncio.create_task(self._pump(session), name=f"realtime proxy {session.id}")
        return True

    async def _pump(self, session: _Session) -> None:
        """Model → client, until the model session closes."""
        model = session.model
        assert model is not None
        reason = "model closed the session"
        try:
            async for message in model:
                try:
                    event = json.loads(message)
                except (ValueError, RecursionError):  # not JSON; nested past the decoder
                    continue
                if isinstance(event, dict):
                    try:
                        await self._deliver(session, event)
                    except Exception as exc:  # one odd event: skipped, the session goes on
                        self._skipped(session, event, exc)
        except Exception as exc:
            reason = f"model connection lost: {type(exc).__name__}"
        if not session.ended:
            session.failed = True
            await session.link.emit("realtime-error", Refusal("model_closed", reason).payload())
            await session.link.disconnect()
            await self._close(session, reason)

    async def _deliver(self, session: _Session, event: dict[str, Any]) -> None:
        metrics = self.services.metrics
        events = record.from_server(event, self._t(session))
        for e in events:
            if e.kind == "barge_in":
                metrics.barge_in("client")
            elif e.kind == "model_error":
                metrics.model_errors += 1
                metrics.model_error(e.detail.get("code"))
        if session.recorder is not None:
            session.recorder.feed(events)
        is_audio = event.get("type") == "response.output_audio.delta"
        if is_audio:
            metrics.frames_out += 1
            if session.binary_audio:
                pcm: bytes | None = None
                with contextlib.suppress(ValueError, TypeError, KeyError):  # not base64: as JSON
                    pcm = base64.b64decode(event["delta"])
                if pcm is not None:
                    await session.link.emit("realtime-response", pcm)
                    return
        out = event if session.protocol == "ga" else server_to_beta(event)
        if out is not None:
            await session.link.emit("realtime-response", out)

    def _skipped(self, session: _Session, event: dict[str, Any], exc: Exception) -> None:
        session.skipped += 1
        if session.skipped <= LOGGED or session.skipped % 1000 == 0:
            logger.warning(
                "realtime proxy %s: skipped a model event %.64r (%d so far): %s",
                session.id,
                event.get("type"),
                session.skipped,
                type(exc).__name__,
            )

    async def _close(self, session: _Session, reason: str) -> None:
        """End a session: its model session, its record, its place in the counts."""
        if session.ended:
            return
        session.ended = True
        self.live.ended(session)
        if session.model is not None:
            with contextlib.suppress(Exception):
                await session.model.close()
        if session.pump is not None and session.pump is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await session.pump
        services = self.services
        if session in services.proxied:
            services.proxied.discard(session)
            outcome = "failed" if session.failed else "caller_hung_up"
            services.metrics.call_ended(LEG, outcome, time.monotonic() - session.started)
            if session.recorder is not None and services.records is not None:
                session.recorder.feed([CallEvent(self._t(session), "closed", {"reason": reason})])
                try:
                    services.records.submit(session.recorder.finish(reason=reason))
                except Exception:
                    logger.exception("realtime proxy %s: could not build its record", session.id)
        logger.info("realtime proxy %s: ended: %s", session.id, reason)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _t(session: _Session) -> float:
        return time.monotonic() - session.started

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        spawn(self.tasks, work)
