"""A simulated phone caller: plays Twilio's cloud against the bridge over HTTP + WebSocket.

``simulate_call`` does what Twilio does for an inbound call answered with
``<Connect><Stream>``: POSTs the (signed) voice webhook, opens the (signed) media
WebSocket, sends ``connected`` and ``start``, streams the caller's audio as 20 ms μ-law
frames at the real-time pace, plays whatever the bridge sends back through ``FarEnd``
(echoing marks when their audio has played, or at once on ``clear``), and finally sends
``stop`` and closes. It records what the caller heard, a timeline, every clear with how
much of the interrupted item had truly played, and every message Twilio would reject.

The webhook, TwiML and handshake are ``bridge.sim.webhook``'s; this module owns the call
once its stream is open (pacing, playback, marks, hang-up) and what it records. It talks
to the bridge only over the wire; it never imports the bridge's own modules.
https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge.sim import messages
from bridge.sim.errors import TwilioWouldReject
from bridge.sim.far_end import FarEnd, OutClear, OutMark, OutMedia, parse_outbound
from bridge.sim.result import (
    CLEARED_SUFFIX,
    RATE,
    CallResult,
    ClearRecord,
    EnergyGate,
    MarkEcho,
    TimelineEvent,
    format_timeline,
    summarise_marks,
)
from bridge.sim.ulaw import ulaw_decode, ulaw_encode
from bridge.sim.wav import read_wav, write_wav
from bridge.sim.webhook import (
    VOICE_PATH,
    open_stream,
    parse_twiml,
    post_voice_webhook,
    twiml_summary,
    voice_params,
)

__all__ = ["CallResult", "format_timeline", "simulate_call", "write_wav"]

logger = logging.getLogger(__name__)

FRAME_S = 0.02
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz

EventCallback = Callable[[TimelineEvent], Any]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


async def simulate_call(
    base_url: str,
    caller_wav: Path | str | np.ndarray,
    *,
    public_url: str | None = None,
    auth_token: str | None = None,
    from_: str = "+15550001111",
    to: str = "+15550002222",
    call_sid: str | None = None,
    tail_s: float = 2.0,
    hangup_after_s: float | None = None,
    on_event: EventCallback | None = None,
    dtmf: list[tuple[float, str]] | None = None,
    twiml: str | None = None,
    redirected: asyncio.Event | None = None,
) -> CallResult:
    """Place one simulated inbound call against the bridge at ``base_url``.

    ``caller_wav``: 8 kHz mono 16-bit WAV path, or int16 samples at 8 kHz (floats in
    [-1, 1] are scaled). The call lasts the audio plus ``tail_s`` of silence, or exactly
    ``hangup_after_s`` seconds of stream time when given; it ends early if the bridge
    closes the socket. ``public_url`` is the URL Twilio would call (signatures are made
    over it; the stream URL's public host is redirected to ``base_url``).
    ``on_event`` is called with each TimelineEvent as it happens (may be async).
    ``dtmf``: keypad presses, ``(seconds into the stream, digit)``.
    ``twiml``: answer an outbound call instead: the TwiML given to ``calls.create`` (no
    voice webhook is asked; ``call_sid`` should be the sid the REST API gave).
    ``redirected``: once set (the call was redirected over REST, e.g. by the Twilio
    stand-in's ``on_redirect``), the stream ends with ``stop`` as Twilio's does.
    Raises WebhookRejected / StreamRejected when the call cannot be set up.
    """
    audio = load_caller_audio(caller_wav)
    duration = hangup_after_s if hangup_after_s is not None else len(audio) / RATE + tail_s
    call = _Call(
        audio,
        frames=max(0, round(duration / FRAME_S)),
        call_sid=call_sid or new_sid("CA"),
        on_event=on_event,
    )
    call.keys = sorted(dtmf or [])
    call.twiml = twiml or ""
    call.redirected = redirected
    return await call.run(base_url, public_url, auth_token, from_, to)


def load_caller_audio(source: Path | str | np.ndarray) -> np.ndarray:
    if isinstance(source, (str, Path)):
        pcm, rate = read_wav(source)
        if rate != RATE:
            raise ValueError(f"{source}: caller audio must be 8000 Hz, not {rate}")
        return pcm
    pcm = np.asarray(source)
    if pcm.ndim != 1:
        raise ValueError("caller audio must be mono (1-D)")
    if np.issubdtype(pcm.dtype, np.floating):
        pcm = np.clip(pcm, -1.0, 1.0) * 32767
    out: np.ndarray = np.clip(pcm, -32768, 32767).astype(np.int16)
    return out


class _Call:
    def __init__(
        self, audio: np.ndarray, *, frames: int, call_sid: str, on_event: EventCallback | None
    ) -> None:
        padded = np.zeros(frames * FRAME_BYTES, dtype=np.int16)
        n = min(len(audio), len(padded))
        padded[:n] = audio[:n]
        self.wire = ulaw_encode(padded)  # exactly what goes out, frame by frame
        self.frames = frames
        self.call_sid = call_sid
        self.account_sid = new_sid("AC")
        self.stream_sid = new_sid("MZ")
        self.on_event = on_event
        self.far = FarEnd(RATE, stream_sid=self.stream_sid)
        self.t0 = 0.0
        self.seq = 0
        self.timeline: list[TimelineEvent] = []
        self.clears: list[ClearRecord] = []
        self.marks: list[MarkEcho] = []
        self.violations: list[str] = []
        self.heard: list[np.ndarray] = []
        self.agent_gate = EnergyGate(RATE)
        self.outbox: list[tuple[str, bool]] = []  # mark echoes owed, (name, cleared)
        self.wake = asyncio.Event()
        self.closed = False
        self.hanging_up = False
        self.close_code: int | None = None
        self.twiml = ""
        self.parameters: dict[str, str] = {}
        self.callbacks: list[asyncio.Future[Any]] = []
        self.sent_frames = 0
        self.keys: list[tuple[float, str]] = []  # keypad presses still to send
        self.redirected: asyncio.Event | None = None  # set: Twilio took the call elsewhere

    # -- setup -----------------------------------------------------------------------

    async def run(
        self,
        base_url: str,
        public_url: str | None,
        auth_token: str | None,
        from_: str,
        to: str,
    ) -> CallResult:
        loop = asyncio.get_running_loop()
        violations: list[str] = []
        if not self.twiml:  # an inbound call: ask the voice webhook
            params = voice_params(self.call_sid, self.account_sid, from_, to)
            self.twiml, violations = await post_voice_webhook(
                base_url, params, public_url=public_url, auth_token=auth_token
            )
        t_twiml = loop.time()
        request_url = (public_url or base_url).rstrip("/") + VOICE_PATH
        # Twilio itself only ever connects to wss; a plain-http public URL is a local test.
        require_wss = (public_url or "").startswith("https:")
        target = parse_twiml(self.twiml, request_url=request_url, require_wss=require_wss)
        self.violations += violations + target.violations
        self.parameters = target.parameters
        ws = await open_stream(target, base_url, public_url, auth_token)
        async with ws:
            self.t0 = loop.time()
            self._event(t_twiml - self.t0, "twiml", twiml_summary(target))
            await self._stream(ws)
        return self._result()

    async def _stream(self, ws: ClientConnection) -> None:
        await ws.send(messages.connected())
        self._event(0.0, "connected")
        start = messages.start(
            self._next_seq(),
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            call_sid=self.call_sid,
            custom_parameters=self.parameters,
        )
        await ws.send(start)
        self.far.advance(self.t0)  # the far end's clock starts with the stream
        receiver = asyncio.create_task(self._receive(ws))
        try:
            await self._pump(ws)
        except ConnectionClosed:
            pass  # the bridge hung up; the receiver records it
        finally:
            if not self.closed and ws.state is State.OPEN:
                self.hanging_up = True
                await self._hang_up(ws)
            await receiver
            if self.callbacks:
                await asyncio.gather(*self.callbacks)

    # -- the Twilio side: send caller audio, play the bridge's audio --------------------

    async def _pump(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        caller_events = self._caller_speech_events()
        k = 0
        while not self.closed:
            self.wake.clear()  # anything the receiver does from here on wakes the next wait
            now = loop.time()
            while k < self.frames and self.t0 + (k + 1) * FRAME_S <= now + 1e-4:
                frame = self.wire[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
                await ws.send(
                    messages.media(
                        self._next_seq(),
                        stream_sid=self.stream_sid,
                        chunk=k + 1,
                        timestamp_ms=k * 20,
                        payload=frame,
                    )
                )
                k += 1
                self.sent_frames = k
                while caller_events and caller_events[0].t < k * FRAME_S:
                    event = caller_events.pop(0)
                    self._event(event.t, event.kind)
                while self.keys and self.keys[0][0] <= k * FRAME_S:
                    t, digit = self.keys.pop(0)
                    await ws.send(
                        messages.dtmf(self._next_seq(), stream_sid=self.stream_sid, digit=digit)
                    )
                    self._event(t, "dtmf", digit)
            self._play(loop.time())
            await self._flush_outbox(ws)
            if self.redirected is not None and self.redirected.is_set():
                self._event(loop.time() - self.t0, "redirected")
                return  # Twilio ends the stream with ``stop`` (see _stream)
            if k >= self.frames or self.closed:
                return
            deadline = self.t0 + (k + 1) * FRAME_S
            due = self.far.next_mark_due()
            if due is not None:
                deadline = min(deadline, due + 50e-6)  # just past it, so it is surely reached
            if self.outbox:
                continue
            try:
                async with asyncio.timeout_at(deadline):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _play(self, now: float) -> None:
        audio, reached = self.far.advance(now)
        self._hear(audio)
        self.outbox += [(name, False) for name in reached]

    def _hear(self, audio: bytes) -> None:
        if not audio:
            return
        pcm = ulaw_decode(audio)
        self.heard.append(pcm)
        for t, started in self.agent_gate.feed(pcm):
            self._event(t, "agent_audio_start" if started else "agent_audio_end")

    async def _flush_outbox(self, ws: ClientConnection) -> None:
        if not self.outbox:
            return
        now = asyncio.get_running_loop().time() - self.t0
        owed, self.outbox = self.outbox, []
        for name, cleared in owed:
            echo = messages.mark(self._next_seq(), stream_sid=self.stream_sid, name=name)
            try:
                await ws.send(echo)
            except ConnectionClosed:
                return
            self.marks.append(MarkEcho(now, name, cleared))
            self._event(now, "mark_echo", name + (CLEARED_SUFFIX if cleared else ""))

    async def _receive(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                now = loop.time()
                if self.hanging_up:
                    continue  # after stop Twilio no longer plays anything
                try:
                    command = parse_outbound(message, self.stream_sid)
                except TwilioWouldReject as exc:
                    self._violation(now - self.t0, str(exc))
                    continue
                match command:
                    case OutMedia(payload):
                        self.far.media(payload, now)
                    case OutMark(name):
                        self.far.mark(name, now)
                        self.wake.set()
                    case OutClear():
                        self._clear(now)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            if not self.hanging_up:
                self.closed = True
                self._play(loop.time())  # the caller heard what played up to the hang-up
                self._end_of_audio()
                self._event(loop.time() - self.t0, "closed", f"by bridge, code {ws.close_code}")
                self.wake.set()

    def _clear(self, now: float) -> None:
        self._play(now)  # audio and marks up to the clear, in order
        item = self.far.current_item()
        played = self.far.played_ms(item) if item is not None else 0.0
        dropped_before = self.far.dropped_samples
        names = self.far.clear(now)
        dropped = (self.far.dropped_samples - dropped_before) * 1000.0 / RATE
        t = now - self.t0
        self.clears.append(ClearRecord(t, item, played, dropped))
        self._event(t, "clear", f"item {item} played {played:.0f} ms, dropped {dropped:.0f} ms")
        # Marks owed from _play stay first; these were cleared, not played.
        cleared = set(self.far.marks_cleared)
        self.outbox += [(name, name in cleared) for name in names]
        self.wake.set()

    async def _hang_up(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        self._play(loop.time())
        await self._flush_outbox(ws)
        self._end_of_audio()
        stop = messages.stop(
            self._next_seq(),
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            call_sid=self.call_sid,
        )
        try:
            await ws.send(stop)
            self._event(loop.time() - self.t0, "stop")
            await ws.close(1000)
        except ConnectionClosed:
            pass
        self.close_code = ws.close_code
        self._event(loop.time() - self.t0, "closed", f"by caller, code {ws.close_code}")

    # -- records ---------------------------------------------------------------------

    def _caller_speech_events(self) -> list[TimelineEvent]:
        gate = EnergyGate(RATE)
        sent = ulaw_decode(self.wire)
        found = gate.feed(sent) + gate.flush()
        kinds = {True: "caller_speech_start", False: "caller_speech_end"}
        return [TimelineEvent(t, kinds[started]) for t, started in found]

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _violation(self, t: float, reason: str) -> None:
        logger.warning("call %s: bridge sent what Twilio rejects: %s", self.call_sid, reason)
        self.violations.append(f"{t:.2f}s {reason}")
        self._event(t, "violation", reason)

    def _event(self, t: float, kind: str, detail: str = "") -> None:
        event = TimelineEvent(t, kind, detail)
        self.timeline.append(event)
        if self.on_event is not None:
            outcome = self.on_event(event)
            if inspect.isawaitable(outcome):
                self.callbacks.append(asyncio.ensure_future(outcome))

    def _end_of_audio(self) -> None:
        for t, started in self.agent_gate.flush():
            self._event(t, "agent_audio_start" if started else "agent_audio_end")

    def _result(self) -> CallResult:
        heard = np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)
        sent = self.wire[: self.sent_frames * FRAME_BYTES]
        timeline = sorted(self.timeline, key=lambda e: e.t)
        return CallResult(
            heard=heard,
            sent=ulaw_decode(sent),
            timeline=summarise_marks(timeline),
            clears=list(self.clears),
            marks=list(self.marks),
            violations=list(self.violations),
            close_code=self.close_code,
            closed_by="caller" if self.hanging_up else "bridge",
            stream_sid=self.stream_sid,
            call_sid=self.call_sid,
            account_sid=self.account_sid,
            twiml=self.twiml,
            custom_parameters=dict(self.parameters),
            played_ms=self.far.played_items(),
        )
