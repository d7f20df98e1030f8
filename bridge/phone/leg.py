"""``WS /twilio/media``: the I/O shell of the Twilio leg (the only I/O module in ``phone``).

Refuses a handshake whose ``X-Twilio-Signature`` does not check out (when a Twilio auth
token is configured), waits for ``start``, refuses a stream without a valid, unexpired
token for its CallSid, then runs the call: ``pump`` turns each frame into a typed input
(``bridge.phone.protocol.leg_input``) and hands it to the runner, ``send`` writes the
Call's commands as Twilio messages. Bad frames are dropped with one log line each (then
summarised, so a flood cannot flood the log); fatal ones end the call cleanly.

Dead peers: new streams are refused past the per-address connection rate
(``bridge.guard``); a Twilio socket that sends nothing for ``MEDIA_IDLE_TIMEOUT_S``
(Twilio sends a frame every 20 ms while the call is up: the socket is half-open) or takes
longer than ``SEND_TIMEOUT_S`` to accept what we send ends the call and its model session,
counted in ``Metrics.peers_dropped["twilio"]``; uvicorn's pings (``MEDIA_PING_*``) close a
socket whose peer stopped answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.call import Call
from bridge.errors import PhoneProtocolError, SecurityError
from bridge.guard import connect_allowed
from bridge.leg import INTERNAL_ERROR, NORMAL, POLICY_VIOLATION, TRY_AGAIN_LATER, Ending, Feeder
from bridge.outbound.amd import stream_started, token_subject
from bridge.phone.protocol import MediaStream, Start, Stop, leg_input
from bridge.playout import ClearPlayback, PhoneOut, SendAudio, SendMark
from bridge.services import Services
from twiml.security import check_stream_token, twilio_ws_signature_ok

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
LOGGED_BAD_FRAMES = 10
SEND_TIMEOUT_S = 5.0  # a Twilio socket that takes longer to accept a send is dead
CLOSE_TIMEOUT_S = 1.0
# Close codes a stream ends with when its peer vanished rather than closed.
_LOST = (1005, 1006, 1011)


async def twilio_media(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    settings = services.settings
    address = websocket.client.host if websocket.client else None
    if not connect_allowed(services, address, "media stream"):
        await websocket.close(code=TRY_AGAIN_LATER)
        return
    if not twilio_ws_signature_ok(settings, websocket.headers, "/twilio/media"):
        logger.warning("media stream refused: bad or missing X-Twilio-Signature on handshake")
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    stream = MediaStream(max_message_bytes=settings.max_message_bytes)
    leg = TwilioLeg(websocket, stream, services)
    start = await leg.wait_for_start()
    if start is None:
        return
    params = start.custom_parameters
    # An outbound call's token names its one-time reference, not the call sid.
    subject = token_subject(params, start.call_sid)
    try:
        if subject is None:
            raise SecurityError("outbound stream reference already used")
        check_stream_token(
            settings.stream_token_secret, subject, params.get("token", ""), time.time()
        )
    except SecurityError as exc:
        logger.warning("call %s: media stream refused: %s", start.call_sid, exc)
        await leg.close(f"refused: {exc}", code=POLICY_VIOLATION)
        return
    if services.at_capacity:
        # The webhook refuses calls past MAX_CALLS; this catches streams that raced it.
        logger.warning("call %s: media stream refused: at capacity", start.call_sid)
        await leg.close("at capacity", code=TRY_AGAIN_LATER)
        return
    agent = settings.agent(params.get("agent", "")) or settings.agent_for(params.get("To"))
    now = time.monotonic()
    call = Call.for_leg(
        agent=agent,
        call_sid=start.call_sid,
        codec="mulaw",
        rate=8000,
        lead_ms=settings.playout_lead_ms,
        uplink_batch_ms=settings.uplink_batch_ms,
        now=now,
    )
    logger.info(
        "call %s: stream %s started (agent %s)", call.call_sid, stream.stream_sid, agent.name
    )
    stream_started(services, call, params)  # outbound: AMD may hold the greeting
    await services.run_call(
        call,
        leg,
        leg_name="phone",
        from_number=params.get("From", ""),
        to_number=params.get("To", ""),
        direction="outbound" if params.get("direction") == "outbound" else "inbound",
    )


class TwilioLeg:
    """Twilio Media Streams over a Starlette WebSocket."""

    def __init__(self, websocket: WebSocket, stream: MediaStream, services: Services) -> None:
        self.websocket = websocket
        self.stream = stream
        self.services = services
        self.call_sid = "-"
        self.bad_frames = 0
        self.closed = False
        self.idle_s = services.settings.media_idle_timeout_s
        # The watchdog: a timer a few times per idle period, never a deadline moved per
        # frame (that cost a timer reschedule on every 20 ms frame of every call).
        self._last_read = 0.0
        self._send_since: float | None = None  # a send in progress since (loop time)
        self._expired: str | None = None  # why the watchdog ended the call
        self._watchdog: asyncio.TimerHandle | None = None
        self._stopped_reading = False

    async def wait_for_start(self) -> Start | None:
        """Read until ``start``; None (and the socket closed) if it never comes."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    message = await self.websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        logger.info("media stream closed before start")
                        self.closed = True
                        return None
                    try:
                        event = self.stream.receive(_payload(message))
                    except PhoneProtocolError as exc:
                        if self._bad_frame(exc):
                            await self.close(f"protocol error: {exc}", code=POLICY_VIOLATION)
                            return None
                        continue
                    if isinstance(event, Start):
                        self.call_sid = event.call_sid
                        return event
                    if isinstance(event, Stop):
                        await self.close("stopped before start")
                        return None
        except TimeoutError:
            logger.warning("media stream refused: no start within %.0f s", START_TIMEOUT_S)
            await self.close("no start message", code=POLICY_VIOLATION)
            return None

    async def pump(self, runner: Feeder) -> Ending:
        """The reading loop: read a frame, parse it, hand what it means to the runner.

        The shape of python-websockets' ``asyncio/connection.py`` over its sans-I/O
        ``protocol.py``: the shell only moves frames; ``MediaStream`` decides what they are.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._last_read = loop.time()
        period = min(self.idle_s, SEND_TIMEOUT_S) / 4
        self._watchdog = loop.call_later(period, self._watch, loop, task, period)
        try:
            return await self._pump(runner, runner.clock, loop)
        except asyncio.CancelledError:
            if self._expired is None or task.uncancel() > 0:
                raise  # not the watchdog's, or cancelled from outside as well
            self.services.metrics.peers_dropped["twilio"] += 1
            logger.warning("call %s: %s: ending the call", self.call_sid, self._expired)
            return Ending(self._expired, INTERNAL_ERROR)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()

    def _watch(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Ending], period: float
    ) -> None:
        """End the pump if Twilio went quiet or stopped taking what we send."""
        now = loop.time()
        if self._send_since is not None and now - self._send_since >= SEND_TIMEOUT_S:
            self._stopped_reading = True
            self._expired = "twilio stopped reading"
        elif now - self._last_read >= self.idle_s:
            self._expired = f"twilio sent nothing for {self.idle_s:g} s"
        if self._expired is not None:
            task.cancel()
        elif not task.done():
            self._watchdog = loop.call_later(period, self._watch, loop, task, period)

    async def _pump(
        self, runner: Feeder, clock: Callable[[], float], loop: asyncio.AbstractEventLoop
    ) -> Ending:
        while True:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return Ending("twilio closed the stream")
            if message["type"] == "websocket.disconnect":
                if message.get("code") in _LOST:
                    self.services.metrics.peers_dropped["twilio"] += 1
                return Ending("twilio closed the stream")
            self._last_read = loop.time()
            now = clock()
            try:
                event = self.stream.receive(_payload(message))
            except PhoneProtocolError as exc:
                if self._bad_frame(exc):
                    return Ending(f"protocol error: {exc}", POLICY_VIOLATION)
                continue
            fed = leg_input(event)
            if fed is not None and (ending := await runner.feed(fed, now)) is not None:
                return ending

    async def send(self, outs: list[PhoneOut]) -> None:
        if self.closed or self._stopped_reading:
            return
        stream = self.stream
        send = self.websocket.send_text
        # A send still waiting after SEND_TIMEOUT_S: the watchdog ends the call.
        self._send_since = asyncio.get_running_loop().time()
        try:
            for out in outs:
                match out:
                    case SendAudio(payload=payload):
                        await send(stream.media(payload))
                    case SendMark(name=name):
                        await send(stream.mark(name))
                    case ClearPlayback():
                        await send(stream.clear())
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The socket is gone; the reader sees the disconnect and ends the call.
            self.closed = True
        finally:
            self._send_since = None

    async def close(self, reason: str, code: int = NORMAL) -> None:
        if self.closed:
            return
        self.closed = True
        logger.info("call %s: closing media stream: %s", self.call_sid, reason)
        # Already gone is fine. A close reason must fit in 123 bytes.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):  # a deaf peer never takes it
                await self.websocket.close(
                    code=code, reason=reason.encode()[:120].decode("utf-8", "ignore")
                )

    def _bad_frame(self, exc: PhoneProtocolError) -> bool:
        """Log a rejected frame (flood-proof); True when the call must end."""
        self.services.metrics.frames_dropped += 1
        self.bad_frames += 1
        if exc.fatal or self.bad_frames <= LOGGED_BAD_FRAMES:
            action = "closing" if exc.fatal else "dropped frame"
            logger.warning("call %s: %s: %s", self.call_sid, action, exc)
        elif self.bad_frames == LOGGED_BAD_FRAMES + 1:
            logger.warning("call %s: more bad frames; logging every 1000th", self.call_sid)
        elif self.bad_frames % 1000 == 0:
            logger.warning("call %s: %d bad frames dropped", self.call_sid, self.bad_frames)
        return exc.fatal


def _payload(message: Mapping[str, Any]) -> str | bytes:
    text = message.get("text")
    if isinstance(text, str):
        return text
    data = message.get("bytes")
    return data if isinstance(data, bytes) else b""
