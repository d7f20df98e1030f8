"""``SoftphoneLeg``: one browser session as the phone side of a ``Call``.

The Socket.IO handlers (``bridge.softphone.server``) parse each client event and
``offer`` it here, as a typed leg input; ``pump`` hands the inputs to the runner in
arrival order, exactly as the Twilio leg does (a hang-up jumps the queue), and ``send``
plays the Call's commands as Socket.IO events. The Call core owns barge-in, playout
pacing and transcripts; this module owns only the session's limits:

* what the browser sends waits in a bounded inbox: when it is full, further messages
  are dropped and counted (a stalled Call never grows memory); marks and commands have
  a second, equal allowance so a flood of audio cannot crowd them out;
* what we send waits in the transport's queue: when a slow browser lets it pass
  ``max_backlog`` packets, agent audio is dropped and counted. Marks and ``clear`` still
  go, so playout accounting keeps moving and barge-in still works; a browser that stays
  past it for ``SLOW_BROWSER_S`` has stopped reading: its call ends, counted in
  ``Metrics.peers_dropped["browser"]``;
* a session in which nobody speaks, types or is spoken to for ``idle_timeout_s`` ends.

It never imports socketio: the server hands it ``emit``/``disconnect`` callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.call import Call, CallEvent
from bridge.inputs import CallerAudio, HangUp, Interrupt, LegInput, TextInput
from bridge.leg import NORMAL, Ending, Feeder
from bridge.metrics import Metrics
from bridge.playout import ClearPlayback, PhoneOut, SendAudio, SendMark, item_of_mark
from bridge.softphone.protocol import HANGUP_REASON, ClientEvent, audio_out, leg_input

logger = logging.getLogger(__name__)

Emit = Callable[[str, Any], Awaitable[None]]
# Call events that mean someone is talking or typing (the idle timer restarts).
_ACTIVITY = frozenset({"speech_started", "speech_stopped", "user_text", "barge_in"})
HUNG_UP = HANGUP_REASON
SLOW_BROWSER_S = 10.0  # past the backlog this long: the browser stopped reading


class SoftphoneLeg:
    def __init__(
        self,
        emit: Emit,
        disconnect: Callable[[], Awaitable[None]],
        *,
        session_id: str,
        sample_rate: int,
        metrics: Metrics,
        idle_timeout_s: float,
        max_inbox: int = 100,
        max_backlog: int = 100,
        backlog: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._disconnect = disconnect
        self.session_id = session_id
        self.sample_rate = sample_rate
        self.metrics = metrics
        self.idle_timeout_s = idle_timeout_s
        self.max_inbox = max_inbox
        self.max_backlog = max_backlog
        self._backlog = backlog
        self._clock = clock
        self._inbox: deque[tuple[float, LegInput]] = deque()
        self._wake = asyncio.Event()
        self._end: HangUp | None = None  # why the pump must stop (hang-up, disconnect)
        self._last_activity = clock()
        self._notes: list[tuple[str, dict[str, Any]]] = []  # status/text for the writer
        self._notes_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._item_id: str | None = None
        self.items_sent: deque[str] = deque(maxlen=32)  # recent agent items (diagnostics)
        self._slow_since: float | None = None  # when the backlog went past its limit
        self.connected = True  # the browser is still there
        self.closed = False
        self.reason: str | None = None
        self.dropped_in = 0  # client messages dropped because the inbox was full
        self.dropped_audio = 0  # agent audio chunks dropped for a slow browser

    # ------------------------------------------------------------------ from the handlers

    def offer(self, event: ClientEvent) -> bool:
        """Queue a parsed client event; False if it was dropped (inbox full, or ended)."""
        fed = leg_input(event)
        if isinstance(fed, HangUp):
            self._stop(fed)
            return True
        if self.ending:
            return False
        # Marks and commands may use a second allowance: losing a mark would leave the
        # playout waiting for an echo that never comes. Audio gets the first one only.
        limit = self.max_inbox if isinstance(fed, CallerAudio) else 2 * self.max_inbox
        if len(self._inbox) >= limit:
            self.dropped_in += 1
            self.metrics.frames_dropped += 1
            if self.dropped_in == 1 or self.dropped_in % 1000 == 0:
                logger.warning(
                    "softphone %s: inbox full, %d messages dropped",
                    self.session_id,
                    self.dropped_in,
                )
            return False
        self._inbox.append((self._clock(), fed))
        self._wake.set()
        return True

    @property
    def ending(self) -> bool:
        """The call is over or about to be: nothing more will be fed to it."""
        return self._end is not None or self.closed

    def disconnected(self, reason: str) -> None:
        """The browser went away (closed the tab, lost the network, or we disconnected it)."""
        self.connected = False
        self._stop(HangUp(f"browser disconnected ({reason})"))

    def _stop(self, hangup: HangUp) -> None:
        if self._end is None:
            self._end = hangup
        self._wake.set()

    # ------------------------------------------------------------------ the Leg protocol

    async def pump(self, runner: Feeder) -> Ending:
        clock = runner.clock
        self._last_activity = clock()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_notes(), name=f"notes {self.session_id}")
        while True:
            if (hangup := self._end) is not None:
                ending = await runner.feed(hangup, clock())
                return ending if ending is not None else Ending(hangup.reason)
            # Activity: speech or typing (``observe``, the handlers) and agent audio going
            # out (``send``). Not ``playout.active``: a page that never echoes its marks
            # would keep that true, and the session alive, forever.
            now = clock()
            remaining = self._last_activity + self.idle_timeout_s - now
            if remaining <= 0:
                return Ending(f"browser idle for {self.idle_timeout_s:g} s")
            if not self._inbox:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                continue
            t, fed = self._inbox.popleft()
            if isinstance(fed, TextInput | Interrupt):
                self._last_activity = t  # someone is typing or interrupting
            if (ending := await runner.feed(fed, t)) is not None:
                return ending

    async def send(self, outs: list[PhoneOut]) -> None:
        if self.closed or not self.connected:
            return
        for i, out in enumerate(outs):
            match out:
                case SendAudio(payload=payload):
                    self._last_activity = self._clock()  # the agent is speaking
                    item_id = self._item_of_next_mark(outs, i) or self._item_id
                    if self._backlog() > self.max_backlog:
                        self._drop_audio()
                        self._too_slow()
                        continue
                    self._slow_since = None
                    await self._send_audio(payload, item_id)
                case SendMark(name=name):
                    item_id = item_of_mark(name)
                    if item_id and item_id != self._item_id:
                        self._item_id = item_id
                        self.items_sent.append(item_id)
                    await self._send_mark(name)
                case ClearPlayback():
                    await self._emit("clear", {})

    async def close(self, reason: str, code: int = NORMAL) -> None:
        """End the session: the page gets ``status`` ended with the (public) reason."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self.connected:
            with contextlib.suppress(Exception):
                await self._send_notes()
                await self._emit("status", {"state": "ended", "reason": public_reason(reason)})
            with contextlib.suppress(Exception):
                await self._disconnect()
        log = logger.info if code == NORMAL else logger.warning
        log(
            "softphone %s: session ended: %s (dropped: %d in, %d audio out)",
            self.session_id,
            reason,
            self.dropped_in,
            self.dropped_audio,
        )

    # ------------------------------------------------------------------ call events

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        """Observer for ``Services.run_call``: transcripts and readiness for the page."""
        for event in events:
            detail = event.detail
            match event.kind:
                case "transcript" | "transcript_delta":
                    self._note(
                        "text",
                        {
                            "role": detail.get("role", "assistant"),
                            "text": detail.get("text", ""),
                            "final": event.kind == "transcript",
                        },
                    )
                case "model_connected":
                    self._note("status", {"state": "agent-ready", "agent": call.agent.name})
                case "model_error":
                    self._note(
                        "error",
                        {
                            "code": "agent_error",
                            "message": f"the agent reported {detail.get('code')}",
                        },
                    )
                case kind if kind in _ACTIVITY:
                    self._last_activity = self._clock()
                case _:
                    pass

    def _note(self, event: str, payload: dict[str, Any]) -> None:
        self._notes.append((event, payload))
        self._notes_ready.set()

    async def _write_notes(self) -> None:
        while True:
            await self._notes_ready.wait()
            self._notes_ready.clear()
            await self._send_notes()

    async def _send_notes(self) -> None:
        notes, self._notes = self._notes, []
        for event, payload in notes:
            if self.connected:
                await self._emit(event, payload)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _item_of_next_mark(outs: list[PhoneOut], i: int) -> str | None:
        for later in outs[i + 1 :]:
            if isinstance(later, SendMark):
                return item_of_mark(later.name)
        return None

    async def _send_audio(self, payload: bytes, item_id: str | None) -> None:
        """One chunk of agent audio on the wire (a leg with another wire format overrides)."""
        await self._emit("audio", audio_out(payload, self.sample_rate, item_id))

    async def _send_mark(self, name: str) -> None:
        await self._emit("mark", {"name": name})

    def _too_slow(self) -> None:
        now = self._clock()
        if self._slow_since is None:
            self._slow_since = now
        elif now - self._slow_since > SLOW_BROWSER_S and self._end is None:
            self.metrics.peers_dropped["browser"] += 1
            logger.warning("softphone %s: browser stopped reading; ending", self.session_id)
            self._stop(HangUp("browser stopped reading"))

    def _drop_audio(self) -> None:
        self.dropped_audio += 1
        if self.dropped_audio == 1 or self.dropped_audio % 1000 == 0:
            logger.warning(
                "softphone %s: browser too slow, %d audio chunks dropped",
                self.session_id,
                self.dropped_audio,
            )


def public_reason(reason: str) -> str:
    """The end reason as the page may show it: no internal details."""
    if reason.startswith("internal error"):
        return "internal error"
    if reason.startswith("model unreachable"):
        return "the agent is unreachable"
    if reason.startswith("model session closed"):
        return "the agent ended the session"
    return reason
