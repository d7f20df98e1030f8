"""The Call coordinator: one conversation between a phone leg and a model session.

Sans-I/O. The runner (``bridge/runner.py``) is the only thing that feeds it: what arrived
from either side, with the current time. It drains two outboxes: ``to_phone`` (leg-agnostic
playback commands) and ``to_model`` (Realtime client events as dicts). It owns:

- the caller's audio on its way to the model (``bridge.uplink``: batched, converted, metered);
- barge-in: clear the phone's buffer, truncate the model's item to what was heard, stop a
  response still being generated, and drop its late audio; the greeting guard;
- the local barge-in detector (``bridge.barge_in``) and its confirmation by the model;
- the call's timeline and transcripts (an outbox for observers; never logged at INFO);
- model sessions coming and going (``model_lost`` / ``model_connected``): when the
  conversation so far is replayed into a new session and the caller audio held meanwhile
  sent to it; and whether now is a quiet moment to recycle an old session (``recycle_due``).

It delegates, and must not reimplement: the responses in flight, their items and which
are stale (``bridge.responses``); the conversation history, its replay, the held
caller audio and comfort noise (``bridge.conversation``); the timeline's records
(``bridge.timeline``); per-item downlink transcoding and what the model sent of each item
(``bridge.spoken``); paced playout, which items are dropped and what the caller has heard
(``bridge.playout``). It must not import asyncio, starlette, websockets or socketio, nor
know any leg's wire format.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection
from typing import Any

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.ai.reconnect import log_model_error
from bridge.audio.transcode import MULAW_SILENCE, PCM16_SILENCE, Codec
from bridge.barge_in import LocalBargeIn, leg_level_dbfs
from bridge.conversation import HISTORY_ITEMS, HOLD_MS, Conversation, HeldAudio, Turn, comfort_noise
from bridge.playout import ClearPlayback, Heard, PhoneOut, Playout, SendAudio
from bridge.responses import Responses
from bridge.spoken import Spoken
from bridge.timeline import BargeIn, CallEvent
from bridge.tools.control import CallControl, ToolResult
from bridge.uplink import UplinkPath, model_audio_for

__all__ = ["HISTORY_ITEMS", "HOLD_MS", "BargeIn", "Call", "CallEvent", "Turn"]

logger = logging.getLogger(__name__)

# How long the model gets to confirm a local barge-in before the agent resumes speaking.
CONFIRM_TIMEOUT_S = 1.2


class Call:
    def __init__(
        self,
        *,
        agent: Agent,
        call_sid: str,
        uplink: UplinkPath,
        downlink_codec: Codec,
        downlink_rate: int,
        playout: Playout,
        now: float,
        greet: bool = True,
    ) -> None:
        self.agent = agent
        self.call_sid = call_sid
        self.uplink = uplink
        self._downlink_codec = downlink_codec
        self.playout = playout
        self.greet = greet
        self.started_at = now
        self.to_phone: list[PhoneOut] = []
        self.to_model: list[dict[str, Any]] = []
        # Timeline and transcript events, drained by the shell like the other outboxes.
        self.events: list[CallEvent] = []
        self.barge_ins: deque[BargeIn] = deque(maxlen=16)  # the latest, for inspection
        self.closed: str | None = None
        self.model_ready = False

        # Per-call memory stays flat however long the call: only the latest are kept.
        self.model_audio = uplink.model_audio  # μ-law passes through: "pcmu", "pcmu-in"
        self._spoken = Spoken(downlink_codec, downlink_rate, playout, self.model_audio)
        self._responses = Responses()
        self._first_audio_seen = False
        self._greeting_pending = False
        self._greeting_until: float | None = None
        self._pending_local: BargeIn | None = None
        self._local = (
            LocalBargeIn(min_speech_ms=agent.barge_in_min_ms) if (agent.local_barge_in) else None
        )
        # Model sessions: how many there were, the conversation to give the next one and
        # the caller audio that arrived while there was none.
        self.recycle_after_s: float | None = None  # the runner sets it from its settings
        self.replay_max_items = 20
        self.sessions = 0
        self._session_started = now
        self._caller_speaking = False
        self._conversation = Conversation(HISTORY_ITEMS)
        self._hold = HeldAudio(int(uplink.model_bytes_per_ms))
        self._respond_on_connect = False  # typed input arrived between sessions
        self._holding = False  # comfort noise is playing while the first session opens
        self._downlink_rate = downlink_rate
        # Tools, end_call, keypad digits and silence (``bridge.tools.control``).
        self.control = CallControl(agent, now)

    @classmethod
    def for_leg(
        cls,
        *,
        agent: Agent,
        call_sid: str,
        codec: Codec,
        rate: int,
        lead_ms: int,
        now: float,
        echoes_marks: bool = True,
        uplink_batch_ms: int = 20,
    ) -> Call:
        """A call whose phone leg carries ``codec`` audio at ``rate`` both ways.

        ``echoes_marks=False``: the leg's client never echoes marks; its audio counts as
        heard at its modelled end (``bridge.schedule``). ``uplink_batch_ms``: caller audio
        per append to the model. An agent with ``model_audio="pcmu"`` on a μ-law 8 kHz leg
        gets the caller's μ-law untouched and speaks μ-law to it; with ``"pcmu-in"`` it gets
        the μ-law untouched and speaks PCM16 24 kHz, transcoded here.
        """
        silence = MULAW_SILENCE if codec == "mulaw" else PCM16_SILENCE
        bytes_per_ms = rate / 1000 * (1 if codec == "mulaw" else 2)
        playout = Playout(
            bytes_per_ms=bytes_per_ms,
            lead_ms=lead_ms,
            chunk_ms=playout_chunk_ms(lead_ms),
            silence=silence,
            echoes_marks=echoes_marks,
        )
        return cls(
            agent=agent,
            call_sid=call_sid,
            uplink=UplinkPath(
                codec,
                rate,
                model_audio=model_audio_for(agent.model_audio, codec, rate),
                batch_ms=uplink_batch_ms,
            ),
            downlink_codec=codec,
            downlink_rate=rate,
            playout=playout,
            now=now,
        )

    # ------------------------------------------------------------------ phone side

    def phone_audio(self, payload: bytes, now: float) -> None:
        """Caller audio in the leg's format (μ-law 8 kHz for Twilio)."""
        uplink = self.uplink
        uplink.add(payload)
        full = uplink.full
        local = self._local
        # While the agent plays, every frame is measured as it comes; else per batch.
        if local is not None and ((playing := self.playing) or full):
            levels = uplink.levels()
            if levels and local.levels(levels, playing=playing, now=now):
                self._local_barge_in(now)
        if full and (audio := uplink.take()):
            if self.model_ready:
                self.to_model.append(rt.input_audio_append(audio))
            # Between sessions keep the latest few seconds for the next one; while the
            # caller is speaking too, so an utterance the old session dies in is not lost.
            if (not self.model_ready and self.sessions) or self._caller_speaking:
                self._hold.add(audio)

    def phone_mark(self, name: str, now: float) -> None:
        self.playout.on_mark(name, now)
        self._pull(now)
        self.control.poll(now, self)  # playout may have just ended: silence counts from here
        self._control(now)

    def phone_dtmf(self, digit: str, now: float) -> None:
        self._event(now, "dtmf", digit=digit)
        self.control.dtmf(digit, now, self)
        self._control(now)

    def phone_stopped(self, now: float, reason: str = "caller hung up") -> None:
        self._close(now, reason)

    def interrupt(self, now: float) -> None:
        """The leg asked to stop the agent's speech (softphone ``clear``)."""
        self._barge_in(now, trigger="client", confirmed=True)

    def text_input(self, text: str, now: float) -> None:
        """Typed input from the leg: a user message, then a response."""
        self.control.caller_typed()
        finishing = self._responses.finishing  # asking now would collide: wait for it
        if self.playout.active or self._responses.active:
            self._barge_in(now, trigger="client", confirmed=True)
        self._conversation.user(None, text)
        if not self.model_ready:  # between sessions: the next one answers it
            self._respond_on_connect = True
            self._event(now, "user_text", chars=len(text), text=text)
            return
        self.to_model.append(rt.user_text(text))
        if finishing:
            self._responses.owe("answer")
        else:
            self._respond(answer=True)
        self._event(now, "user_text", chars=len(text), text=text)

    # ------------------------------------------------------------------ model side

    def model_connected(self, now: float) -> None:
        """The model socket is open: configure the session and greet the caller.

        A later session (after ``model_lost``) is configured the same way, then given the
        conversation so far and the caller audio held meanwhile; it is not greeted.
        """
        reconnect = self.sessions > 0
        if self._holding:  # stop the comfort noise: the agent is about to speak
            self._holding = False
            self.to_phone.append(ClearPlayback())
        self.sessions += 1
        self._session_started = now
        self.model_ready = True
        self.to_model.append(rt.session_update(self.agent, audio_format=self.model_audio))
        if reconnect:
            items = self._conversation.replay(self.replay_max_items)
            self.to_model.extend(items)
            replayed = len(items)
            held_ms = self._hold.ms
            for chunk in self._hold.drain(200):  # 200 ms a piece
                self.to_model.append(rt.input_audio_append(chunk))
            if self._respond_on_connect:
                self._respond_on_connect = False
                self._respond(answer=True)
            self._event(
                now, "model_reconnected", session=self.sessions, replayed=replayed, held_ms=held_ms
            )
            return
        # A conversation continued from an earlier call (``continue_from``) starts with it.
        self.to_model.extend(self._conversation.replay(self.replay_max_items))
        if self.greet and self.agent.greeting:
            self._respond(greeting_instructions(self.agent.greeting))
            # The guard window starts with the greeting's first audio, not now: the model
            # takes a moment to answer.
            self._greeting_pending = True
        self._event(now, "model_connected")

    def greet_late(self) -> None:
        """Greet now, or as soon as the model is there: a call created with ``greet=False``
        that waited for something first (answering-machine detection, bridge.outbound)."""
        if self.greet:
            return
        self.greet = True
        # A callee who spoke first is already being answered: that is the greeting.
        answering = self._first_audio_seen or self.response_active
        if self.model_ready and self.agent.greeting and not answering:
            self._respond(greeting_instructions(self.agent.greeting))
            self._greeting_pending = True

    def model_event(self, event: rt.ServerEvent, now: float) -> None:
        match event:
            case rt.AudioDelta(response_id=response_id, item_id=item_id, audio=audio):
                self._audio_delta(response_id, item_id, event.content_index, audio, now)
            case rt.AudioDone(response_id=response_id, item_id=item_id):
                self._responses.all_audio(response_id)
                self._audio_done(item_id, now)
            case rt.SpeechStarted(audio_start_ms=start_ms):
                self._caller_speaking = True
                self._hold.clear()
                self._event(now, "speech_started", audio_start_ms=start_ms, item_id=event.item_id)
                self._speech_started(now)
            case rt.SpeechStopped(audio_end_ms=end_ms, item_id=item_id):
                self._caller_speaking = False
                self._hold.clear()
                self._conversation.user(item_id)
                self._event(now, "speech_stopped", audio_end_ms=end_ms)
            case rt.ResponseCreated(response_id=response_id):
                self._responses.created(response_id)
            case rt.OutputItemAdded(response_id=response_id, item_id=item_id):
                if not self._responses.item_added(response_id, item_id):
                    self._drop(item_id)  # of a response cut off
                else:
                    if event.role == "assistant" and event.type == "message":
                        self._conversation.assistant(item_id)
                        self._event(now, "agent_item", item_id=item_id, response_id=response_id)
            case rt.ResponseDone(response_id=response_id, status=status, usage=usage):
                if (owed := self._responses.done(response_id)) is not None:
                    self._respond(answer=owed == "answer")
                self._event(
                    now, "response_done", status=status, usage=usage, response_id=response_id
                )
            case rt.InputTranscript(item_id=item_id, transcript=text):
                self._conversation.user(item_id, text)
                self._event(now, "transcript", role="user", text=text, item_id=item_id)
            case rt.TranscriptDelta(item_id=item_id, delta=delta):
                self._conversation.assistant_delta(item_id, delta)
                if item_id not in self.playout.dropped:
                    self._event(now, "transcript_delta", role="assistant", text=delta)
            case rt.TranscriptDone(item_id=item_id, transcript=text):
                self._conversation.assistant_done(item_id, text)
                self._event(now, "transcript", role="assistant", text=text, item_id=item_id)
            case rt.ServerError(code=code, message=message, event_id=asked):
                raced = self._responses.refused(code, asked) or self.control.lost_race(event)
                kind = log_model_error(self.call_sid, event, raced=raced)
                self._event(now, "model_error", code=code, message=message, category=kind)
            case rt.SessionCreated() | rt.SessionUpdated():
                self._event(now, type(event).__name__.lower())
            case _:
                pass
        self.control.model_event(event, now, self)
        self._control(now)

    def tool_result(self, result: ToolResult, now: float) -> None:
        """A tool the control asked for (``to_tools``) has answered."""
        self.control.tool_result(result, now, self)
        self._control(now)

    @property
    def hangup(self) -> str | None:
        """Why the call should end now (end_call, a silent caller), else None."""
        return self.control.hangup

    @property
    def response_active(self) -> bool:
        return self._responses.active

    @property
    def caller_speaking(self) -> bool:
        return self._caller_speaking

    @property
    def playing(self) -> bool:
        return self.playout.active

    def hold(self, now: float, ms: int) -> None:
        """The first model session is slow to open (its handshake is being retried): play
        ``ms`` of comfort noise rather than dead air. ``model_connected`` clears it."""
        if self.sessions or self._holding or self.closed is not None:
            return
        self._holding = True
        for payload in comfort_noise(
            self._downlink_codec, self._downlink_rate, ms, self.playout.frame_bytes
        ):
            self.to_phone.append(SendAudio(payload))
        self._event(now, "hold", ms=ms)

    def model_closed(self, now: float, reason: str) -> None:
        self._close(now, f"model session closed: {reason}")

    def model_lost(self, now: float, reason: str) -> None:
        """The model session ended (or is being replaced) while the call goes on.

        Agent audio already here plays out to its end (nothing half-item waits in the
        playout); none of it can be truncated later, since the next session does not know
        its items. Whatever the old session still says is the runner's to ignore. Until
        ``model_connected``, caller audio is held (the latest ``HOLD_MS``).
        """
        if not self.model_ready:
            return
        self.model_ready = False
        self._conversation.settle()
        self._spoken.retire()
        self._responses.lost()
        self._pending_local = None
        self._greeting_pending = False
        if not self._caller_speaking:
            self._hold.clear()  # else the utterance so far goes to the next session
        self._caller_speaking = False
        self.to_model.clear()  # meant for the old session
        self.control.model_lost()
        self._event(now, "model_lost", reason=reason)
        self._pull(now)

    def recycle_due(self, now: float) -> bool:
        """The session is older than ``recycle_after_s`` and now is a quiet moment
        (nothing being said either way): time to replace it."""
        return (
            self.model_ready
            and self.closed is None
            and self.recycle_after_s is not None
            and now - self._session_started >= self.recycle_after_s
            and not self._responses.active
            and not self._caller_speaking
            and self._pending_local is None
            and not self.playout.active
        )

    def continue_from(self, turns: list[tuple[str, str]]) -> None:
        """Earlier turns of this conversation (``(role, text)``, oldest first, from an
        earlier call): the first session is given them before anything else."""
        for role, text in turns:
            self._conversation.earlier(role, text)

    @property
    def history(self) -> list[Turn]:
        """The conversation so far (the latest ``HISTORY_ITEMS`` turns)."""
        return self._conversation.turns

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Release paced audio and settle time-outs; call at ``next_due``."""
        self._pull(now)
        self.control.poll(now, self)
        self._control(now)
        confirm_by = self._confirm_by()
        if confirm_by is not None and now >= confirm_by:
            # The model never heard speech: it was noise. Let the agent carry on from
            # where it was cut off (its item is truncated to what the caller heard).
            self._pending_local = None
            self._event(now, "barge_in_unconfirmed")
            if self._responses.active:  # creating one now would collide with it
                self._responses.owe("carry_on")
            elif not self._responses.create_sent:  # else the one on its way carries on
                self._respond()

    def next_due(self, now: float) -> float | None:
        due = self.playout.next_due(now)
        if (confirm_by := self._confirm_by()) is not None:
            due = confirm_by if due is None else min(due, confirm_by)
        control = self.control.next_due(now)
        if control is not None:
            due = control if due is None else min(due, control)
        return due

    # ------------------------------------------------------------------ internals

    def _confirm_by(self) -> float | None:
        """When an unconfirmed local barge-in times out: ``tick`` and ``next_due`` use this
        one sum (``now - t >= timeout`` can be false at the time ``t + timeout`` names)."""
        pending = self._pending_local
        return None if pending is None else pending.t + CONFIRM_TIMEOUT_S

    def _audio_delta(
        self, response_id: str, item_id: str, content_index: int, audio: bytes, now: float
    ) -> None:
        if item_id in self.playout.dropped or self._responses.stale(response_id):
            return
        if not self._first_audio_seen:
            self._first_audio_seen = True
            self._event(now, "agent_audio_start")
        if self._greeting_pending:
            self._greeting_pending = False
            self._greeting_until = now + self.agent.greeting_guard_ms / 1000
        self._spoken.audio(item_id, content_index, audio)
        self._pull(now)

    def _audio_done(self, item_id: str, now: float) -> None:
        if self._spoken.done(item_id):
            self._pull(now)

    def _pull(self, now: float) -> None:
        if self.closed is not None:
            return
        outs = self.playout.pull(now)
        if self._local is not None:
            for out in outs:
                if isinstance(out, SendAudio):
                    level = leg_level_dbfs(out.payload, self._downlink_codec)
                    self._local.agent_audio(level, now)
        self.to_phone.extend(outs)

    def _speech_started(self, now: float) -> None:
        self._responses.owed = None  # the caller is talking: the model will answer
        pending = self._pending_local
        if pending is not None:
            # The model confirms what the local detector already acted on.
            pending.confirmed = True
            self._pending_local = None
            self._event(now, "barge_in_confirmed")
            # Audio of a response the model started meanwhile is stale too.
            self._drop_response_items()
            if self.playout.active:
                self._barge_in(now, trigger="model", confirmed=True)
            return
        if not (self.playout.active or self._responses.active):
            return
        if self._greeting_guarded(now):
            # "Hello?" on pick-up: the model may stop generating, but what it already
            # sent of the greeting plays out.
            self._event(now, "barge_in_ignored", reason="greeting guard")
            return
        self._barge_in(now, trigger="model", confirmed=True)

    def _local_barge_in(self, now: float) -> None:
        if self._pending_local is not None or not self.playout.active:
            return
        if self._greeting_guarded(now):
            return
        self._pending_local = self._barge_in(now, trigger="local", confirmed=False)

    def _greeting_guarded(self, now: float) -> bool:
        return self._greeting_until is not None and now < self._greeting_until

    def _barge_in(self, now: float, *, trigger: str, confirmed: bool) -> BargeIn:
        heard: Heard | None = self.playout.clear(now)
        self.to_phone.append(ClearPlayback())
        audio_end_ms: int | None = None
        item_ms: int | None = None
        if heard is not None and (cut := self._spoken.cut(heard)) is not None:
            audio_end_ms, item_ms = cut.audio_end_ms, cut.sent_ms
            if cut.sent_ms > 0:
                self._conversation.heard(heard.item_id, min(1.0, audio_end_ms / cut.sent_ms))
            if cut.truncate:
                self.to_model.append(
                    rt.item_truncate(heard.item_id, heard.content_index, audio_end_ms)
                )
        cancellable = self._responses.cancellable
        if trigger == "client" and cancellable is not None:
            # Only an explicit interrupt cancels. For caller speech the model's server VAD
            # cancels its own response when it hears it (cancelling too would race that),
            # and a local detection it never confirms should not have cut the response.
            self.to_model.append(rt.response_cancel(cancellable))
        self._drop_response_items()
        barge = BargeIn(now, trigger, heard.item_id if heard else None, audio_end_ms, confirmed)
        self.barge_ins.append(barge)
        # item_ms (what the model had sent of the item) lets records cut its transcript.
        self._event(
            now,
            "barge_in",
            trigger=trigger,
            item_id=barge.item_id,
            audio_end_ms=audio_end_ms,
            item_ms=item_ms,
        )
        return barge

    def _drop_response_items(self) -> None:
        """Everything of the response in flight is stale, including items not seen yet."""
        for item_id in self._responses.cut():
            self._drop(item_id)

    def _drop(self, item_id: str) -> None:
        self._spoken.drop(item_id)
        self._conversation.unheard(item_id)  # dropped before the caller heard any of it

    @property
    def _dropped(self) -> Collection[str]:
        """Read-only: the playout owns which items are dropped."""
        return self.playout.dropped

    def _close(self, now: float, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self._event(now, "closed", reason=reason)

    def _control(self, now: float) -> None:
        """Take what call control queued: model events, turns, timeline entries."""
        control = self.control
        if control.to_model:
            self.to_model.extend(control.to_model)
            control.to_model.clear()
        for text in control.user_texts:
            self._conversation.user(None, text)
        control.user_texts.clear()
        for kind, detail in control.events:
            self._event(now, kind, **detail)
        control.events.clear()

    def _respond(self, instructions: str | None = None, *, answer: bool = False) -> None:
        """Ask for a response (``answer``: to typed input); until it is created, typed
        input waits for it to end."""
        event = rt.response_create(instructions)
        self.to_model.append(event)
        self._responses.asked(event["event_id"], answer=answer)

    def _event(self, now: float, kind: str, **detail: Any) -> None:
        self.events.append(CallEvent(now - self.started_at, kind, detail))


def playout_chunk_ms(lead_ms: int) -> int:
    """Agent audio per message (and mark) toward the leg: half the lead, in whole frames.

    Larger chunks mean fewer messages, marks and echoes; what the caller heard is read off
    the release schedule, not the mark granularity, so barge-ins cut as exactly. The far
    end still holds at least half the lead when the next chunk arrives."""
    return max(20, lead_ms // 2 // 20 * 20)


def greeting_instructions(greeting: str) -> str:
    return f"Greet the caller by saying exactly: {greeting}"
