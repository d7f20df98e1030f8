"""The I/O shell around a ``Call``: pumps one phone leg and one model socket.

Three tasks per call: the leg reader (the leg's ``pump``), the model reader and the pacer
(which wakes only when paced audio is due, never on a fixed tick). The runner is the only
thing that feeds the Call: a leg hands it typed inputs (``bridge.inputs``) through
:meth:`CallRunner.feed`, which applies each with the time it arrived, records the uplink
metrics and drains the Call's outboxes straight away, phone first, so a ``clear`` leaves
before anything else. The first task to finish ends the call: the model socket is closed
within a second and the leg is closed with the reason logged.

The model task outlives its sockets. Opening one (at the start and after a loss) is
retried with jittered backoff inside a budget (``bridge.ai.reconnect.Retry``; 401/403 are
not retried); while the first one is retried the caller hears comfort noise
(``Call.hold``). When a session ends mid-call (closed, dropped, ``session_expired``, a
socket that stops reading or answering pings) the Call is told (``model_lost``: playout
finishes what it has, caller audio is held), a fresh
session is opened and configured as before, and the conversation so far is replayed
(``model_connected``); only if no session can be opened does the call end. Nothing still
arriving on the old socket reaches the Call. A session older than ``recycle_after_s`` is
replaced the same way at a quiet moment (checked as caller audio arrives). Each replacement
counts in ``Metrics.model_reconnects`` and in the timeline (``model_lost``,
``model_reconnected``).

A leg (a client protocol's shell) and how to add one: ``bridge.leg``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.ai import events as rt
from bridge.ai.client import (
    CONNECT_ERRORS,
    backlog,
    close_quietly,
    fits,
    http_status,
    is_open,
)
from bridge.ai.reconnect import Retry, RetryConfig, classify_error
from bridge.background import spawn
from bridge.call import Call, CallEvent
from bridge.errors import RealtimeProtocolError
from bridge.inputs import CallerAudio, Dtmf, FarEndMark, HangUp, Interrupt, LegInput, TextInput
from bridge.leg import INTERNAL_ERROR, AudioTap, Ending, Leg
from bridge.metrics import LATE_FRAME_S, CallFigures, Metrics
from bridge.playout import ClearPlayback, SendAudio
from bridge.tools.control import ToolResult
from bridge.tools.executor import ToolExecutor

logger = logging.getLogger(__name__)

ModelConnector = Callable[[], Awaitable[ClientConnection]]
Observer = Callable[[Call, list[CallEvent]], None]


# A model socket that takes longer than this to accept what we send has stopped reading.
MODEL_SEND_TIMEOUT_S = 2.0
# Unsent bytes toward the model past which sends leave the call's path for a writer task
# (below websockets' default write limit, 32 KiB, where a send starts to wait).
BACKLOG_BYTES = 16 * 1024


class CallRunner:
    def __init__(
        self,
        call: Call,
        leg: Leg,
        connect_model: ModelConnector,
        *,
        metrics: Metrics,
        observers: list[Observer] | None = None,
        clock: Callable[[], float] = time.monotonic,
        reconnect: RetryConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.call = call
        self.leg = leg
        self.connect_model = connect_model
        self.metrics = metrics
        self.observers = observers or []
        self.clock = clock
        self.model: ClientConnection | None = None
        self._wake = asyncio.Event()
        self._pacer_due: float | None = None  # the pacer's own deadline (None: idle)
        self._sending = asyncio.Lock()  # toward the phone
        self._model_sending = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None  # sends while the model lags
        self._clear_trigger: float | None = None
        self.figures = CallFigures(metrics)  # this call's share of the figures
        self.reconnect = reconnect or RetryConfig()
        call.recycle_after_s = self.reconnect.recycle_after_s
        call.replay_max_items = self.reconnect.replay_max_items
        self._rng = rng or random.Random()
        self._replacing: str | None = None  # why we closed the socket on purpose
        self.leg_name = ""  # what kind of leg ("phone", "softphone", …): set by Services
        self.tap: AudioTap | None = None  # a recording, when the agent records calls
        self._closing: set[asyncio.Task[None]] = set()
        # HTTP tools run beside the call (``bridge.tools``); Services sets the numbers.
        self.tools = ToolExecutor(call.call_sid, call.agent, self._tool_done)

    async def open_model(self) -> ClientConnection:
        """Open a model socket, retrying within the budget; raise the last failure."""
        retry = Retry(self.reconnect, self.clock(), self._rng)
        while True:
            left = retry.started + self.reconnect.budget_s - self.clock()
            try:
                # An attempt that hangs may use what is left of the budget (at least 1 s).
                async with asyncio.timeout(max(left, 1.0)):
                    return await self.connect_model()
            except CONNECT_ERRORS as exc:
                status = http_status(exc)
                delay = retry.next_delay(self.clock(), status)
                if delay is None:
                    raise
                logger.warning(
                    "call %s: model handshake failed (%s); retry in %.2f s",
                    self.call.call_sid,
                    f"HTTP {status}" if status else type(exc).__name__,
                    delay,
                )
                # Before the first session the caller would hear dead air: comfort noise.
                self.call.hold(self.clock(), int(self.reconnect.budget_s * 1000))
                await self.flush()
                await asyncio.sleep(delay)

    async def run(self) -> Ending:
        """Run the call to its end; say why it ended."""
        call = self.call
        call.control.can_transfer = self.tools.redirect is not None
        try:
            self.model = await self.open_model()
        except CONNECT_ERRORS as exc:
            ending = Ending(f"model unreachable: {type(exc).__name__}: {exc}", INTERNAL_ERROR, True)
            logger.error("call %s: %s", call.call_sid, ending.reason)
            await self.leg.close(ending.reason, ending.code)
            return ending
        tasks: set[asyncio.Task[Ending]] = set()
        ending = Ending("ended")
        try:
            call.model_connected(self.clock())
            await self.flush()
            tasks = {
                asyncio.create_task(self._leg_reader(), name=f"leg {call.call_sid}"),
                asyncio.create_task(self._model_reader(), name=f"model {call.call_sid}"),
                asyncio.create_task(self._pacer(), name=f"pacer {call.call_sid}"),
            }
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None:
                    ending = Ending(
                        f"internal error: {type(error).__name__}: {error}", INTERNAL_ERROR
                    )
                    logger.error("call %s: %s", call.call_sid, ending.reason, exc_info=error)
                else:
                    ending = task.result()
        except Exception as error:  # the opening moves failed: still close both sides
            ending = Ending(f"internal error: {type(error).__name__}: {error}", INTERNAL_ERROR)
            logger.error("call %s: %s", call.call_sid, ending.reason, exc_info=error)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            call.phone_stopped(self.clock(), ending.reason)
            self._notify()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.model.close()
            for closing in list(self._closing):
                closing.cancel()
            if self._writer is not None:
                self._writer.cancel()
            await self.tools.close()
            await self.leg.close(ending.reason, ending.code)
        return ending

    async def flush(self) -> None:
        """Send whatever the Call has queued: phone first, then the model.

        Three tasks flush; a lock per side keeps their sends from interleaving, so nothing
        queued before a ``clear`` can reach the phone after it, and model events go out in
        order. Model sends are made inline while the socket keeps up; once it lags
        (``BACKLOG_BYTES`` unsent) a writer task sends them, so a model that stops reading
        never holds up the phone side; after ``MODEL_SEND_TIMEOUT_S`` its session is
        given up and replaced.
        """
        call = self.call
        if call.control.to_tools:
            for command in call.control.to_tools:
                self.tools.start(command)
            call.control.to_tools.clear()
        if call.control.transfers:  # transfer_call: the notice was heard, redirect now
            for transfer in call.control.transfers:
                self.tools.start_transfer(transfer)
            call.control.transfers.clear()
        if call.to_phone:
            await self._send_phone()
        await self._send_model()
        # Wake the pacer only if what came in moved the next paced release before the
        # deadline it sleeps on: caller frames (50 a second) mostly do not.
        due = call.next_due(self.clock())
        if due is not None and (self._pacer_due is None or due < self._pacer_due):
            self._wake.set()
        if call.events:
            self._notify()

    async def _send_phone(self) -> None:
        call = self.call
        async with self._sending:
            if call.to_phone:
                outs, call.to_phone = call.to_phone, []
                handed_at = self.clock()
                await self.leg.send(outs)
                self.figures.handed(sum(1 for o in outs if isinstance(o, SendAudio)), handed_at)
                if self.tap is not None:
                    self.tap.played(outs, handed_at)
                if self._clear_trigger is not None and any(
                    isinstance(o, ClearPlayback) for o in outs
                ):
                    self.metrics.clear.add((self.clock() - self._clear_trigger) * 1000)
                    self._clear_trigger = None

    async def _send_model(self) -> None:
        call = self.call
        writing = self._writer is not None and not self._writer.done()  # it sends them
        if call.to_model and self.model is not None and call.model_ready and not writing:
            if not is_open(self.model):
                # Closing (a ping timed out, the peer closed): a send would wait for the
                # close to finish. From now on caller audio is held for the next session;
                # the model reader sees the close and reconnects.
                call.model_lost(self.clock(), "the model socket is closing")
            elif backlog(self.model) > BACKLOG_BYTES:
                # The model is not keeping up: send beside the call, never in its way.
                self._writer = asyncio.create_task(self._write_model())
            else:
                await self._write_model()

    async def feed(self, leg_input: LegInput, now: float) -> Ending | None:
        """Apply one input from the leg, which arrived at ``now``, and send what it caused.

        The one way into the Call. Returns the call's ``Ending`` when the input ends it
        (``HangUp``), else None.
        """
        call = self.call
        match leg_input:
            case CallerAudio(payload=payload, stream_ms=stream_ms):
                self.metrics.frames_in += 1
                if self.tap is not None:
                    self.tap.caller(payload, now, stream_ms)
                self._clear_trigger = now  # the local detector may turn it into a barge-in
                call.phone_audio(payload, now)
                if not (call.to_phone or call.events):
                    # The usual frame: at most a batch for the model; no timer moved.
                    await self._send_model()
                if call.to_phone or call.events:  # a barge-in, a lost session: the rest
                    await self.flush()
                self.metrics.uplink.add((self.clock() - now) * 1000)
                if call.recycle_due(now):
                    self.replace_model(now, "recycled")
            case FarEndMark(name=name):
                call.phone_mark(name, now)
                await self.flush()
            case Dtmf(digit=digit):
                call.phone_dtmf(digit, now)
                await self.flush()
            case TextInput(text=text):
                self._clear_trigger = now  # typing over the agent interrupts it
                call.text_input(text, now)
                await self.flush()
            case Interrupt():
                self._clear_trigger = now
                call.interrupt(now)
                await self.flush()
            case HangUp(reason=reason):
                if (target := call.control.transfer_target) is not None:  # Twilio took it
                    reason = f"transferred to {target}"
                call.phone_stopped(now, reason)
                return Ending(reason)
        return None

    async def _tool_done(self, result: ToolResult) -> None:
        self.metrics.tool_call(result.name, result.outcome, result.seconds)
        self.call.tool_result(result, self.clock())
        await self.flush()

    def _notify(self) -> None:
        events, self.call.events = self.call.events, []
        self.figures.observe(events, self.call.started_at, self.call.playout.active)
        for observer in self.observers:
            try:
                observer(self.call, events)
            except Exception:
                logger.exception("call %s: observer failed", self.call.call_sid)

    async def _leg_reader(self) -> Ending:
        return await self.leg.pump(self)

    async def _write_model(self) -> None:
        """Send what the Call queued for the model, in order, until nothing is left."""
        call = self.call
        async with self._model_sending:
            while call.to_model and self.model is not None and call.model_ready:
                model = self.model
                events, call.to_model = call.to_model, []
                payloads = [orjson.dumps(event) for event in events]
                # Sends that fit below the write limit cannot wait: no timer for them
                # (arming one cost more than the usual send itself).
                deadline = (
                    contextlib.nullcontext()
                    if fits(model, payloads)
                    else asyncio.timeout(MODEL_SEND_TIMEOUT_S)
                )
                try:
                    async with deadline:
                        for payload in payloads:
                            await model.send(payload, text=True)
                except ConnectionClosed:
                    return  # the model reader sees the close and opens the next session
                except TimeoutError:
                    if model is self.model:
                        model.transport.abort()  # no close handshake with a deaf peer
                        self.metrics.peers_dropped["model"] += 1
                        self.replace_model(self.clock(), "the model stopped reading")
                    return

    def replace_model(self, now: float, reason: str) -> None:
        """Let go of the current session on purpose (recycle, expiry): the Call stops
        using it now, the socket closes beside the call, and the model task opens the
        next one when the old reader ends."""
        if not self.call.model_ready or self.model is None:
            return
        self.call.model_lost(now, reason)
        self._replacing = reason
        self._close_beside(self.model)

    def _close_beside(self, model: ClientConnection) -> None:
        """Close a socket we are done with in its own task (at most ~1 s, then cut)."""
        if any(getattr(t, "model", None) is model for t in self._closing):
            return
        task = spawn(self._closing, close_quietly(model))
        task.model = model  # type: ignore[attr-defined]

    async def _model_reader(self) -> Ending:
        call = self.call
        while True:
            assert self.model is not None
            old = self.model
            reason = await self._read_model(old)
            now = self.clock()
            call.model_lost(now, reason)  # a no-op if replace_model said so already
            self._replacing = None
            await self.flush()
            self._close_beside(old)  # the next session does not wait for it
            try:
                self.model = await self.open_model()
            except CONNECT_ERRORS as exc:
                detail = f"{type(exc).__name__}: {exc}"
                call.model_closed(self.clock(), f"{reason}; reconnect failed: {detail}")
                return Ending(
                    f"model session closed: {reason}; unreachable: {detail}", INTERNAL_ERROR, True
                )
            self.metrics.model_reconnects += 1
            logger.info("call %s: model session replaced (%s)", call.call_sid, reason)
            call.model_connected(self.clock())
            await self.flush()

    async def _read_model(self, model: ClientConnection) -> str:
        """Feed the Call what the session says until it ends; why it ended."""
        call = self.call
        try:
            async for message in model:
                if not call.model_ready:
                    continue  # the session is being replaced: nothing of it counts now
                now = self.clock()
                try:
                    event = rt.parse_server_event(message)
                except RealtimeProtocolError as exc:
                    logger.warning("call %s: dropped model event: %s", call.call_sid, exc)
                    continue
                if isinstance(event, rt.ServerError):
                    self.metrics.model_errors += 1
                elif isinstance(event, rt.SpeechStarted):
                    self._clear_trigger = now
                call.model_event(event, now)
                await self.flush()
                if isinstance(event, rt.AudioDelta):
                    self.metrics.downlink.add((self.clock() - now) * 1000)
                elif (
                    isinstance(event, rt.ServerError) and classify_error(event) == "session_expired"
                ):
                    self.replace_model(now, f"session expired: {event.message}")
            return self._replacing or "closed by the model"
        except ConnectionClosed as exc:
            if self._replacing:
                return self._replacing
            return exc.rcvd.reason if exc.rcvd and exc.rcvd.reason else str(exc)

    async def _pacer(self) -> Ending:
        call = self.call
        wake = self._wake
        loop = asyncio.get_running_loop()
        while True:
            wake.clear()
            now = self.clock()
            due = self._pacer_due = call.next_due(now)
            audio_due = call.playout.next_due(now)
            if due is None:
                await wake.wait()
            else:
                # A timer that sets the event, not a timeout around the wait: waking on
                # time is the usual case, and a timeout would cancel the task to do it.
                # At least a millisecond: a due time that is already past never spins.
                timer = loop.call_later(max(due - now, 0.001), wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
            if audio_due is not None and self.clock() - audio_due > LATE_FRAME_S:
                self.metrics.frames_late += 1
            call.tick(self.clock())
            await self.flush()
            if call.hangup is not None:  # end_call, a silent caller: the goodbye was heard
                return Ending(call.hangup)
