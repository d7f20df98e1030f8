"""``CompanionLeg``: one ``/ws/companion`` client as the phone side of a ``Call``.

``pump`` reads the socket once the session has started (``bridge.companion.routes`` reads
``auth`` and ``start_realtime`` before), parses each frame (``bridge.companion.protocol``)
and feeds the runner caller audio and typed text. ``send`` turns the Call's paced agent
audio into ``audio_delta``; ``observe`` turns call events into ``session_ready``,
``speech_started``, ``transcription``, ``response_complete`` and ``error``. Everything
for the client goes through one bounded outbox and a writer task, in order.

The client echoes no marks: the Call is built with ``echoes_marks=False`` (audio counts as
heard at its modelled end), the audio is released at real time, and a barge-in's
``ClearPlayback`` drops what is still in the outbox (the client stops its own playback on
``speech_started``). Limits owned here: non-audio messages a minute, caller audio at most
at real time, the idle timeout and the outbox bound (a slow client loses audio, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketState

from bridge.call import Call, CallEvent
from bridge.companion import protocol as wire
from bridge.companion.sessions import AudioPace, CompanionSessions, LiveSession, RateWindow
from bridge.inputs import CallerAudio, HangUp, TextInput
from bridge.leg import NORMAL, POLICY_VIOLATION, Ending, Feeder
from bridge.playout import ClearPlayback, PhoneOut, SendAudio, SendMark, item_of_mark

logger = logging.getLogger(__name__)

MAX_OUTBOX = 200  # messages waiting for a slow client, past which agent audio is dropped
KEPT_ITEMS = 64


class CompanionLeg:
    def __init__(
        self,
        websocket: WebSocket,
        *,
        live: LiveSession,
        registry: CompanionSessions,
        rate: RateWindow,
        gain: float,
        max_bytes: int,
        idle_timeout_s: float,
        default_voice: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.websocket = websocket
        self.live = live
        self.registry = registry
        self.rate = rate
        self.gain = gain
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.default_voice = default_voice
        self._clock = clock
        self._pace = AudioPace()
        self._outbox: deque[tuple[bool, str]] = deque()  # (is audio, frame)
        self._ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._responses: OrderedDict[str, str | None] = OrderedDict()  # item → response
        self._item_id: str | None = None
        self._pace_warned = False
        self.model = ""
        self.voice = ""
        self.warnings: tuple[str, ...] = ()
        self.closed = False
        self.dropped_audio = 0

    # ------------------------------------------------------------------ the Leg protocol

    async def pump(self, runner: Feeder) -> Ending:
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write(), name=f"companion {self.live.client_id}"
            )
        while True:
            remaining = self.live.last_activity + self.idle_timeout_s - self._clock()
            if remaining <= 0:
                return Ending(f"idle for {self.idle_timeout_s:g} s")
            try:
                async with asyncio.timeout(remaining):
                    frame = await self.websocket.receive()
            except TimeoutError:
                continue
            now = runner.clock()
            if frame["type"] == "websocket.disconnect":
                hangup = HangUp("client disconnected")
                ending = await runner.feed(hangup, now)
                return ending or Ending(hangup.reason)
            text = frame.get("text")
            if text is None:
                self.say(wire.error("binary frames are not part of this protocol; send JSON"))
                continue
            try:
                message = wire.parse_message(
                    text, max_bytes=self.max_bytes, default_voice=self.default_voice
                )
            except wire.CompanionError as exc:
                if (verdict := self._count_message(now)) == "close":
                    return Ending("too many messages", POLICY_VIOLATION)
                if verdict == "take":
                    self.say(wire.error(str(exc)))
                continue
            match message:
                case wire.AudioIn(pcm=pcm):
                    if not self._pace.allow(len(pcm), now):
                        if not self._pace_warned:
                            self._pace_warned = True
                            self.say(wire.error("audio arrives faster than real time: dropped"))
                        continue
                    self.registry.audio_in_bytes += len(pcm)
                    if (ending := await runner.feed(CallerAudio(pcm), now)) is not None:
                        return ending
                case wire.TextIn(text=typed):
                    if (verdict := self._count_message(now)) == "close":
                        return Ending("too many messages", POLICY_VIOLATION)
                    if verdict == "drop":
                        continue
                    self.live.last_activity = now
                    if (ending := await runner.feed(TextInput(typed), now)) is not None:
                        return ending
                case _:
                    if (verdict := self._count_message(now)) == "close":
                        return Ending("too many messages", POLICY_VIOLATION)
                    if verdict == "take":
                        self.say(wire.error("auth and start_realtime come once, first"))

    def _count_message(self, now: float) -> str:
        """Count a non-audio message: "take" it, "drop" it (over the limit: the client is
        told once), or "close" (it keeps on past twice the limit)."""
        if self.rate.allow(now):
            return "take"
        if self.rate.over == 1:
            self.say(wire.error(f"too many messages: at most {self.rate.limit} a minute"))
        return "drop" if self.rate.over <= self.rate.limit else "close"

    async def send(self, outs: list[PhoneOut]) -> None:
        if self.closed:
            return
        for i, out in enumerate(outs):
            match out:
                case SendAudio(payload=payload):
                    self.live.last_activity = self._clock()  # the agent is speaking
                    item_id = _item_of_next_mark(outs, i) or self._item_id
                    if len(self._outbox) >= MAX_OUTBOX:
                        self.dropped_audio += 1
                        continue
                    self.registry.audio_out_bytes += len(payload)
                    pcm = wire.apply_gain(payload, self.gain)
                    response_id = self._responses.get(item_id) if item_id else None
                    self._push(True, wire.audio_delta(pcm, response_id, item_id))
                case SendMark(name=name):
                    if (item_id := item_of_mark(name)) is not None:
                        self._item_id = item_id
                case ClearPlayback():
                    # Not yet sent is not heard: keep only what is not agent audio.
                    kept = [m for m in self._outbox if not m[0]]
                    self._outbox = deque(kept)

    async def close(self, reason: str, code: int = NORMAL) -> None:
        if self.closed:
            return
        self.closed = True
        if code != NORMAL and not reason.startswith("too many"):
            self._push(False, wire.error(public_reason(reason)))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._flush()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=public_reason(reason)[:120])
        log = logger.info if code == NORMAL else logger.warning
        log(
            "companion %s: session ended: %s (%d audio chunks dropped)",
            self.live.client_id,
            reason,
            self.dropped_audio,
        )

    # ------------------------------------------------------------------ call events

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        """Observer for ``Services.run_call``: what the client hears of the call."""
        for event in events:
            d = event.detail
            match event.kind:
                case "model_connected":
                    extra = {"warnings": list(self.warnings)} if self.warnings else {}
                    self.say(
                        wire.message(
                            "session_ready",
                            sessionId=call.call_sid,
                            model=self.model,
                            voice=self.voice,
                            **extra,
                        )
                    )
                case "speech_started":
                    self.live.last_activity = self._clock()
                    self.say(
                        wire.message(
                            "speech_started",
                            itemId=d.get("item_id"),
                            audioStartMs=d.get("audio_start_ms"),
                        )
                    )
                case "transcript":
                    self.live.turns += 1
                    if d.get("role") == "user":
                        self.say(
                            wire.message(
                                "transcription", itemId=d.get("item_id"), transcript=d.get("text")
                            )
                        )
                case "agent_item":
                    self._responses[d["item_id"]] = d.get("response_id")
                    while len(self._responses) > KEPT_ITEMS:
                        self._responses.popitem(last=False)
                case "response_done":
                    self.say(
                        wire.message(
                            "response_complete",
                            responseId=d.get("response_id"),
                            status=d.get("status"),
                            usage=d.get("usage"),
                        )
                    )
                case "model_error":
                    self.say(wire.error(f"the agent reported {d.get('code')}"))
                case _:
                    pass

    # ------------------------------------------------------------------ the writer

    def say(self, frame: str) -> None:
        """Queue a non-audio message for the client."""
        self._push(False, frame)

    def _push(self, audio: bool, frame: str) -> None:
        self._outbox.append((audio, frame))
        self._ready.set()

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._outbox:
            _, frame = self._outbox.popleft()
            if self.websocket.application_state != WebSocketState.CONNECTED:
                self._outbox.clear()
                return
            try:
                await self.websocket.send_text(frame)
            except Exception:  # the client went away: the reader sees the disconnect
                self._outbox.clear()
                return


def _item_of_next_mark(outs: list[PhoneOut], i: int) -> str | None:
    for later in outs[i + 1 :]:
        if isinstance(later, SendMark):
            return item_of_mark(later.name)
    return None


def public_reason(reason: str) -> str:
    """An end reason as the client may see it: no internal details."""
    if reason.startswith("internal error"):
        return "internal error"
    if reason.startswith("model unreachable"):
        return "Service temporarily unavailable"
    if reason.startswith("model session closed"):
        return "the agent ended the session"
    return reason
