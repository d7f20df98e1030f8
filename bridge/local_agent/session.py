"""One local-agent session: a Realtime (GA) look-alike that echoes the caller. Sans-I/O.

Owns one socket's state and the dispatch of client events: the session configuration
(``session_config``), input audio and its VAD (``input``, ``vad``), the conversation, the
response in flight and its audio schedule (``response``), the maximum duration. Client
events in (with the time), server events out; :meth:`AgentSession.poll` releases response
audio as time passes, faster than real time in chunks of varying size like the service.
No socket, no clock: ``bridge.local_agent.server`` is the I/O shell.

It is strict on purpose, so that it catches the mistakes the real service punishes: every
malformed, unknown or beta-shaped client event, a truncate past the audio actually sent,
a cancel with nothing to cancel, each gets an ``error`` event carrying the offending
``event_id``. What it sent is recorded for tests: ``errors``, ``truncates``,
``audio_sent_ms`` and ``responses`` (item id → audio bytes sent, in the output format).

Echo turn (server VAD): speech_started → speech_stopped → input_audio_buffer.committed →
conversation.item.added/done (user) → input transcription completed (placeholder text) →
response.created → response.output_item.added → conversation.item.added (assistant) →
response.content_part.added → (output_audio_transcript.delta, output_audio.delta)… →
output_audio.done → output_audio_transcript.done → content_part.done →
conversation.item.done → response.output_item.done → response.done → rate_limits.updated.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

from bridge import b64
from bridge.local_agent.checks import (
    INVALID_AUDIO,
    NO_ACTIVE_RESPONSE,
    RESPONSE_KEYS,
    Problem,
    already_responding,
    check_client_event,
    commit_empty,
    parse_frame,
    unknown_response_key,
)
from bridge.local_agent.conversation import Conversation, Events, Item, new_id, server_event
from bridge.local_agent.input import SAMPLES_PER_MS, InputAudio
from bridge.local_agent.response import (
    GREETING_TRANSCRIPT,
    SpokenResponse,
    load_greeting,
    rate_limits,
    schedule,
)
from bridge.local_agent.session_config import check_session_update, default_session, merge_session
from bridge.local_agent.tools import (
    CallTool,
    Say,
    check_output_item,
    check_tools,
    function_call_events,
    plan_response,
    speak,
)
from bridge.local_agent.vad import VadStart

logger = logging.getLogger(__name__)

RECEIVED_SAMPLES = 20


@dataclass
class AgentSession:
    """The state machine of one session. Feed it with :meth:`receive` and :meth:`poll`."""

    now: float
    model: str = "gpt-realtime"
    max_duration_s: float = 1800.0
    speedup: float = 4.0
    first_audio_delay_s: float = 0.0
    chunk_ms: tuple[int, int] = (40, 400)
    greeting: bytes | None = None
    created_at: float | None = None  # Unix time, for ``expires_at``
    seed: int | None = None
    # Records for tests.
    errors: list[dict[str, Any]] = field(default_factory=list)
    truncates: list[tuple[str, int, int]] = field(default_factory=list)
    audio_sent_ms: dict[str, float] = field(default_factory=dict)
    responses: dict[str, bytearray] = field(default_factory=dict)
    # The first few client events of each type, as received (for conformance checks).
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    closed: tuple[int, str] | None = None  # (close code, reason) once the server hangs up

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._expires = self.now + self.max_duration_s
        self.config = default_session(self._id("sess"), self.model)
        if self.created_at is not None:
            self.config["expires_at"] = int(self.created_at + self.max_duration_s)
        self._input = InputAudio()
        self._configure_vad()
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._conversation = Conversation(self._rng)
        self._active: SpokenResponse | None = None
        self._tokens_left = 15_000_000
        self._answered: set[str] = set()  # items a tool call or spoken output answered

    # ------------------------------------------------------------------ public API

    def start(self) -> list[dict[str, Any]]:
        """The events sent as soon as the socket opens."""
        return [self._event("session.created", session=self.config)]

    def receive(self, message: str | bytes | dict[str, Any], now: float) -> list[dict[str, Any]]:
        """Handle one client message (text frame, binary frame, or parsed event)."""
        out = self._advance(now)
        if self.closed:
            return out
        event = parse_frame(message)
        if isinstance(event, Problem):
            return [*out, self._error(event, None)]
        samples = self.received.setdefault(str(event.get("type")), [])
        if len(samples) < RECEIVED_SAMPLES:
            samples.append(event)
        event_id = event.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        problem = check_client_event(event)
        if problem:
            return [*out, self._error(problem, event_id)]
        out += self._handle(event, event_id, now)
        out += self._advance(now)
        return out

    def poll(self, now: float) -> list[dict[str, Any]]:
        """Events due by ``now``: response audio, response ends, session expiry."""
        return self._advance(now)

    def next_due(self) -> float | None:
        """When :meth:`poll` has something to release next (None: nothing scheduled)."""
        if self.closed:
            return None
        due = self._expires
        r = self._active
        if r is not None:
            chunk_due = r.next_due()
            due = min(due, self.now if chunk_due is None else chunk_due)
        return due

    def expire_at(self, when: float) -> None:
        """End the session at ``when`` as if it hit its maximum duration (a fault switch)."""
        self._expires = min(self._expires, when)

    @property
    def active_response_id(self) -> str | None:
        return self._active.id if self._active else None

    @property
    def input_buffered_ms(self) -> float:
        """Input audio held in memory (bounded: see ``InputAudio.trim``)."""
        return self._input.buffered_ms

    # ------------------------------------------------------------------ dispatch

    def _handle(
        self, event: dict[str, Any], event_id: str | None, now: float
    ) -> list[dict[str, Any]]:
        match event["type"]:
            case "input_audio_buffer.append":
                return self._on_append(event["audio"], event_id, now)
            case "session.update":
                return self._on_session_update(event["session"], event_id)
            case "response.create":
                return self._on_response_create(event.get("response") or {}, event_id, now)
            case "response.cancel":
                return self._on_response_cancel(event.get("response_id"), event_id)
            case "conversation.item.truncate":
                return self._on_truncate(
                    event["item_id"], event["content_index"], event["audio_end_ms"], event_id
                )
            case "input_audio_buffer.commit":
                return self._on_commit(event_id)
            case "input_audio_buffer.clear":
                self._input.clear()
                self._speech_item = None
                return [self._event("input_audio_buffer.cleared")]
            case "conversation.item.create":
                item = event["item"]
                if item.get("type") == "function_call_output":
                    problem = check_output_item(item, self._conversation.items)
                    if problem:
                        return [self._error(problem, event_id)]
                return self._answer(self._conversation.create(item), event_id)
            case "conversation.item.delete":
                return self._answer(self._conversation.delete(event["item_id"]), event_id)
            case "conversation.item.retrieve":
                return self._answer(self._conversation.retrieve(event["item_id"]), event_id)
        raise AssertionError(event["type"])  # check_client_event lets nothing else through

    # ------------------------------------------------------------------ session

    def _on_session_update(
        self, update: dict[str, Any], event_id: str | None
    ) -> list[dict[str, Any]]:
        problem = check_session_update(update) or check_tools(update)
        if problem:
            return [self._error(problem, event_id)]
        was_on = self._turn is not None
        self.config = merge_session(self.config, update)
        if (self._turn is not None) != was_on:  # VAD switched on or off: start afresh
            self._input.vad.stop_now()
            self._speech_item = None
        self._configure_vad()
        return [self._event("session.updated", session=self.config)]

    @property
    def _turn(self) -> dict[str, Any] | None:
        turn: dict[str, Any] | None = self.config["audio"]["input"]["turn_detection"]
        return turn

    def _configure_vad(self) -> None:
        turn = self._turn or {}
        self._input.vad.configure(
            threshold=turn.get("threshold", 0.5),
            prefix_padding_ms=turn.get("prefix_padding_ms", 300),
            silence_duration_ms=turn.get("silence_duration_ms", 500),
        )

    # ------------------------------------------------------------------ input audio

    def _on_append(self, audio: str, event_id: str | None, now: float) -> list[dict[str, Any]]:
        try:
            pcm = b64.decode(audio)
        except ValueError:
            return [self._error(INVALID_AUDIO, event_id)]
        out: list[dict[str, Any]] = []
        fmt = self.config["audio"]["input"]["format"]  # audio/pcmu: bridge.local_agent.codec
        for decision in self._input.append(pcm, vad_on=self._turn is not None, fmt=fmt):
            if isinstance(decision, VadStart):
                out += self._speech_started(decision.audio_start_ms)
            else:
                out += self._speech_stopped(decision.audio_end_ms, now)
        self._input.trim(
            vad_on=self._turn is not None,
            speaking_from_ms=(self._speech_start_ms if self._speech_item is not None else None),
        )
        return out

    def _speech_started(self, audio_start_ms: int) -> list[dict[str, Any]]:
        self._speech_item = self._id("item")
        self._speech_start_ms = audio_start_ms
        out = [
            self._event(
                "input_audio_buffer.speech_started",
                audio_start_ms=audio_start_ms,
                item_id=self._speech_item,
            )
        ]
        turn = self._turn or {}
        if self._active is not None and turn.get("interrupt_response", True):
            out += self._finish(self._active, "cancelled", "turn_detected")
        return out

    def _speech_stopped(self, audio_end_ms: int, now: float) -> list[dict[str, Any]]:
        item_id = self._speech_item or self._id("item")
        self._speech_item = None
        out = [
            self._event(
                "input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id
            )
        ]
        out += self._commit(
            item_id, self._speech_start_ms * SAMPLES_PER_MS, audio_end_ms * SAMPLES_PER_MS
        )
        if (self._turn or {}).get("create_response", True) and self._active is None:
            out += self._start_response(now)
        return out

    def _on_commit(self, event_id: str | None) -> list[dict[str, Any]]:
        if self._turn is None or self._speech_item is not None:
            self._input.settle()  # μ-law: the upsampler's last ms belong to this commit
        end = self._input.samples_in
        if self._turn is not None and self._speech_item is not None:
            item_id, self._speech_item = self._speech_item, None
            self._input.vad.stop_now()
            return self._commit(item_id, self._speech_start_ms * SAMPLES_PER_MS, end)
        # With VAD the buffer holds nothing committable between utterances.
        start = self._input.uncommitted_from if self._turn is None else end
        ms = (end - start) / SAMPLES_PER_MS
        if ms < 100:
            return [self._error(commit_empty(ms), event_id)]
        return self._commit(self._id("item"), start, end)

    def _commit(self, item_id: str, start: int, end: int) -> list[dict[str, Any]]:
        audio = self._input.audio(start, end)
        self._input.committed(end)
        transcribe = bool(self.config["audio"]["input"]["transcription"])
        return self._conversation.commit(item_id, audio, transcribe=transcribe)

    # ------------------------------------------------------------------ responses

    def _on_response_create(
        self, params: dict[str, Any], event_id: str | None, now: float
    ) -> list[dict[str, Any]]:
        for key in params:
            if key not in RESPONSE_KEYS:
                return [self._error(unknown_response_key(key), event_id)]
        if self._active is not None:
            return [self._error(already_responding(self._active.id), event_id)]
        return self._start_response(now, params)

    def _on_response_cancel(
        self, response_id: str | None, event_id: str | None
    ) -> list[dict[str, Any]]:
        r = self._active
        if r is None or (response_id is not None and response_id != r.id):
            return [self._error(NO_ACTIVE_RESPONSE, event_id)]
        return self._finish(r, "cancelled", "client_cancelled")

    def _start_response(
        self, now: float, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        items = self._conversation.items
        last = items[next(reversed(items))] if items else None
        plan = plan_response(self.config["instructions"], params or {}, last, self._answered)
        if isinstance(plan, CallTool):
            self._conversation.take_pending()
            return self._call_tool(plan)
        pcm = None if isinstance(plan, Say) else self._conversation.take_pending()
        if isinstance(plan, Say):
            pcm, transcript = speak(plan.text), plan.text
        elif pcm is not None:
            transcript = f"[echo of caller speech {len(pcm) / 48000:.1f} s]"
        else:
            pcm = self.greeting if self.greeting is not None else load_greeting()
            transcript = GREETING_TRANSCRIPT
        item, previous = self._conversation.add_assistant()
        chunks = schedule(
            pcm,
            transcript,
            start=now + self.first_audio_delay_s,
            speedup=self.speedup,
            chunk_ms=self.chunk_ms,
            rng=self._rng,
        )
        r = SpokenResponse(
            self._id("resp"),
            item,
            pcm,
            transcript,
            chunks,
            input_ms=self._input.samples_in / SAMPLES_PER_MS,
            output=self.config["audio"]["output"],
        )
        self._active = r
        self.audio_sent_ms[item.id] = 0.0
        self.responses[item.id] = r.sent
        return r.opening(self._event, previous)

    def _call_tool(self, plan: CallTool) -> list[dict[str, Any]]:
        """A response that only calls a tool (see ``bridge.local_agent.tools``)."""
        previous = self._conversation.last_item_id()
        item = {
            "id": self._id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "completed",
            "name": plan.name,
            "call_id": self._id("call"),
            "arguments": plan.arguments,
        }
        self._conversation.items[item["id"]] = Item(item["id"], "assistant", raw=item)
        self._answered.add(item["id"])
        response = {
            "object": "realtime.response",
            "id": self._id("resp"),
            "status_details": None,
            "conversation_id": "conv_local",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": dict(self.config["audio"]["output"])},
            "usage": None,
            "metadata": None,
        }
        return function_call_events(self._event, response, item, previous)

    def _advance(self, now: float) -> list[dict[str, Any]]:
        self.now = max(self.now, now)
        out: list[dict[str, Any]] = []
        if self.closed:
            return out
        r = self._active
        if r is not None:
            out += r.release(self._event, min(now, self._expires))
            self.audio_sent_ms[r.item.id] = r.sent_ms
            if r.all_sent:
                out += self._finish(r, "completed", None)
        if now >= self._expires:
            out += self._expire()
        return out

    def _finish(self, r: SpokenResponse, status: str, reason: str | None) -> list[dict[str, Any]]:
        self._active = None
        out = r.closing(self._event, status, reason)
        self._tokens_left -= out[-1]["response"]["usage"]["total_tokens"]
        logger.debug("response %s %s after %.0f ms of audio", r.id, status, r.sent_ms)
        return [*out, rate_limits(self._event, self._tokens_left)]

    # ------------------------------------------------------------------ items

    def _on_truncate(
        self, item_id: str, content_index: int, audio_end_ms: int, event_id: str | None
    ) -> list[dict[str, Any]]:
        sent = self.audio_sent_ms.get(item_id, 0.0)
        result = self._conversation.truncate(item_id, content_index, audio_end_ms, sent)
        if not isinstance(result, Problem):
            self.truncates.append((item_id, content_index, audio_end_ms))
        return self._answer(result, event_id)

    # ------------------------------------------------------------------ plumbing

    def _expire(self) -> list[dict[str, Any]]:
        minutes = self.max_duration_s / 60
        span = f"{minutes:g} minutes" if minutes >= 1 else f"{self.max_duration_s:g} seconds"
        message = f"Your session hit the maximum duration of {span}."
        error = self._error(Problem("session_expired", message, None), None)
        self.closed = (1001, message)
        return [error]

    def _answer(self, result: Events | Problem, event_id: str | None) -> list[dict[str, Any]]:
        """The events of an operation, or the ``error`` event of its problem."""
        return [self._error(result, event_id)] if isinstance(result, Problem) else result

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return server_event(self._rng, kind, **fields)

    def _error(self, problem: Problem, event_id: str | None) -> dict[str, Any]:
        event = self._event(
            "error",
            error={
                "type": problem.type,
                "code": problem.code,
                "message": problem.message,
                "param": problem.param,
                "event_id": event_id,
            },
        )
        self.errors.append(event)
        logger.debug("error %s: %s", problem.code, problem.message)
        return event

    def _id(self, prefix: str) -> str:
        return new_id(self._rng, prefix)
