"""``VoiceLeg``: one raw PCM WebSocket client as the phone side of a ``Call``.

``pump`` reads binary frames, checks them (``bridge.wsvoice.protocol``) and hands the
audio to the runner; ``send`` writes the agent's paced audio as binary frames. These
clients never echo marks and know no ``clear``: the call is made with
``echoes_marks=False`` (audio counts as heard at its modelled end) and a barge-in simply
stops the audio (the playout lead, ``PLAYOUT_LEAD_MS``, is all a client has buffered).
``observe`` turns call events into the protocol's JSON events, sent by a writer task in
order with the audio (one lock for every send).

Limits: a frame that is not binary PCM16, too large, or beyond the audio budget
(``AudioBudget``) gets an ``error`` event and is dropped; ``MAX_BAD_FRAMES`` of them end the
session (1008). A client that stops reading for ``SEND_TIMEOUT_S`` is cut off; one that
sends nothing (microphones send silence too) for ``SOFTPHONE_IDLE_TIMEOUT_S`` is ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.call import Call, CallEvent
from bridge.errors import PhoneProtocolError
from bridge.inputs import CallerAudio
from bridge.leg import NORMAL, POLICY_VIOLATION, Ending, Feeder
from bridge.metrics import Metrics
from bridge.playout import PhoneOut, SendAudio
from bridge.wsvoice import protocol

logger = logging.getLogger(__name__)

MAX_BAD_FRAMES = 50
LOGGED_BAD_FRAMES = 5
SEND_TIMEOUT_S = 5.0


class VoiceLeg:
    def __init__(
        self,
        websocket: WebSocket,
        *,
        session_id: str,
        rate: int,
        max_bytes: int,
        metrics: Metrics,
        idle_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.websocket = websocket
        self.idle_timeout_s = idle_timeout_s
        self.session_id = session_id
        self.rate = rate
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.budget = protocol.AudioBudget(rate, clock())
        self.bad_frames = 0
        self.closed = False
        self.gone = False  # the client went away (or stopped reading)
        self._lock = asyncio.Lock()
        self._notes: list[str] = []
        self._notes_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._connected = False
        self._responses: dict[str, list[str]] = {}  # response id → its text so far
        self._final: dict[str, str] = {}  # response id → the item's final transcript
        self._item_response: dict[str, str] = {}

    # ------------------------------------------------------------------ the Leg protocol

    async def pump(self, runner: Feeder) -> Ending:
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write_notes(), name=f"wsvoice {self.session_id}"
            )
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    message = await self.websocket.receive()
            except TimeoutError:
                return Ending(f"no audio for {self.idle_timeout_s:g} s")
            except (WebSocketDisconnect, RuntimeError):
                return self._gone()
            if message["type"] == "websocket.disconnect":
                return self._gone()
            now = runner.clock()
            try:
                frame = protocol.parse_frame(message, self.max_bytes)
                if not self.budget.take(len(frame.pcm), now):
                    raise PhoneProtocolError("audio arrives faster than real time: frame dropped")
            except PhoneProtocolError as exc:
                if self._bad_frame(str(exc)):
                    return Ending("too many bad frames", POLICY_VIOLATION)
                await self._send_text(protocol.error(str(exc)))
                continue
            if (ending := await runner.feed(CallerAudio(frame.pcm), now)) is not None:
                return ending

    async def send(self, outs: list[PhoneOut]) -> None:
        for out in outs:
            # Marks are not echoed and ``clear`` is not part of the protocol (module doc).
            if isinstance(out, SendAudio):
                await self._send(out.payload)

    async def close(self, reason: str, code: int = NORMAL) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._send_notes()
        if not self.gone:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=_public(reason)[:120])
        log = logger.info if code == NORMAL else logger.warning
        log("wsvoice %s: session ended: %s", self.session_id, reason)

    # ------------------------------------------------------------------ call events

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        """Observer for ``Services.run_call``: the protocol's JSON events."""
        for ev in events:
            detail = ev.detail
            match ev.kind:
                case "model_connected" if not self._connected:
                    self._connected = True
                    self._note(protocol.event("AIConnected", sessionId=call.call_sid))
                case "speech_started":
                    self._note(protocol.event("AISpeechDetected"))
                case "speech_stopped":
                    self._note(protocol.event("AISpeechEnded"))
                case "agent_item":
                    response_id = str(detail.get("response_id"))
                    self._item_response[str(detail.get("item_id"))] = response_id
                    if response_id not in self._responses:
                        self._responses[response_id] = []
                        self._note(protocol.event("AIResponseStart"))
                case "transcript_delta" if detail.get("role") == "assistant":
                    text = str(detail.get("text", ""))
                    for parts in list(self._responses.values())[-1:]:
                        parts.append(text)
                    self._note(protocol.text_delta(text))
                case "transcript" if detail.get("role") == "assistant":
                    of = self._item_response.get(str(detail.get("item_id")))
                    if of is not None:
                        self._final[of] = str(detail.get("text", ""))
                case "response_done":
                    done = str(detail.get("response_id"))
                    if (said := self._responses.pop(done, None)) is not None:
                        final = self._final.pop(done, "".join(said))
                        self._note(protocol.event("AIResponseEnd", finalText=final))
                case "model_error":
                    self._note(protocol.error(f"the agent reported {detail.get('code')}"))
                case _:
                    pass

    def _note(self, text: str) -> None:
        self._notes.append(text)
        self._notes_ready.set()

    async def _write_notes(self) -> None:
        while True:
            await self._notes_ready.wait()
            self._notes_ready.clear()
            await self._send_notes()

    async def _send_notes(self) -> None:
        notes, self._notes = self._notes, []
        for text in notes:
            await self._send_text(text)

    # ------------------------------------------------------------------ internals

    async def _send_text(self, text: str) -> None:
        await self._send(text)

    async def _send(self, data: str | bytes) -> None:
        if self.gone:
            return
        try:
            async with self._lock, asyncio.timeout(SEND_TIMEOUT_S):
                if isinstance(data, bytes):
                    await self.websocket.send_bytes(data)
                else:
                    await self.websocket.send_text(data)
        except TimeoutError:
            logger.warning("wsvoice %s: client stopped reading; cutting it off", self.session_id)
            self.gone = True
            with contextlib.suppress(Exception):
                await self.websocket.close(code=POLICY_VIOLATION, reason="not reading")
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.gone = True  # the reader sees the disconnect and ends the call

    def _gone(self) -> Ending:
        self.gone = True
        return Ending("client closed the connection")

    def _bad_frame(self, why: str) -> bool:
        """Count a dropped frame (logged flood-proof); True when the session must end."""
        self.metrics.frames_dropped += 1
        self.bad_frames += 1
        if self.bad_frames <= LOGGED_BAD_FRAMES:
            logger.warning("wsvoice %s: dropped frame: %s", self.session_id, why)
        return self.bad_frames > MAX_BAD_FRAMES


def _public(reason: str) -> str:
    """The end reason as the client may see it: no internal details."""
    for prefix, public in (
        ("internal error", "internal error"),
        ("model unreachable", "the agent is unreachable"),
        ("model session closed", "the agent ended the session"),
    ):
        if reason.startswith(prefix):
            return public
    return reason


def scope_environ(websocket: WebSocket) -> dict[str, Any]:
    """The handshake as the WSGI-style mapping ``bridge.softphone.admission`` reads."""
    environ: dict[str, Any] = {"asgi.scope": websocket.scope}
    for name, key in (
        ("origin", "HTTP_ORIGIN"),
        ("host", "HTTP_HOST"),
        ("x-forwarded-host", "HTTP_X_FORWARDED_HOST"),
        ("x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"),
        ("authorization", "HTTP_AUTHORIZATION"),
    ):
        value = websocket.headers.get(name)
        if value is not None:
            environ[key] = value
    return environ
