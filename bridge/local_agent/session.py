"""One local-agent session: a Realtime (GA) look-alike that echoes the caller. Sans-I/O.

Owns the conversation state of one socket: the effective session configuration, the input
audio buffer and its VAD, the conversation items, and the one in-flight response with its
schedule of audio deltas. It takes client events with the current time and returns the
server events to send; response audio is released by :meth:`AgentSession.poll` as time
passes (faster than real time, in chunks of varying size, like the service). It never
touches a socket or a clock: ``bridge.local_agent`` is the I/O shell.

It is strict on purpose, so that it catches the mistakes the real service punishes: every
malformed, unknown or beta-shaped client event, a truncate past the audio actually sent,
a cancel with nothing to cancel, each gets an ``error`` event carrying the offending
``event_id``. What it sent is recorded for tests: ``errors``, ``truncates``,
``audio_sent_ms`` and ``responses`` (item id → PCM bytes sent).

Echo turn (server VAD): speech_started → speech_stopped → input_audio_buffer.committed →
conversation.item.added/done (user) → input transcription completed (placeholder text) →
response.created → response.output_item.added → conversation.item.added (assistant) →
response.content_part.added → (output_audio_transcript.delta, output_audio.delta)… →
output_audio.done → output_audio_transcript.done → content_part.done →
conversation.item.done → response.output_item.done → response.done → rate_limits.updated.
"""

from __future__ import annotations

import binascii
import logging
import random
import wave
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from bridge.local_agent.checks import (
    INVALID_AUDIO,
    ITEM_TYPES,
    NO_ACTIVE_RESPONSE,
    RESPONSE_KEYS,
    Problem,
    already_responding,
    bad_item_type,
    check_client_event,
    check_session_update,
    check_truncate,
    commit_empty,
    default_session,
    merge_session,
    no_item,
    parse_frame,
)
from bridge.local_agent.input import SAMPLES_PER_MS, InputAudio
from bridge.local_agent.response import Item, SpokenResponse, rate_limits, schedule
from bridge.local_agent.vad import VadStart

logger = logging.getLogger(__name__)

GREETING_TRANSCRIPT = "Hello, this is the echo agent. Say something, and I will repeat it."


@lru_cache(maxsize=1)
def load_greeting() -> bytes:
    """PCM16LE 24 kHz mono of the packaged greeting."""
    ref = resources.files("bridge.local_agent").joinpath("greeting-24k.wav")
    with ref.open("rb") as raw, wave.open(raw) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (24000, 1, 2):
            raise ValueError("greeting-24k.wav must be 24 kHz mono 16-bit")
        frames: bytes = w.readframes(w.getnframes())
        return frames


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
        self._items: dict[str, Item] = {}
        self._pending: str | None = None  # committed user audio not answered yet
        self._active: SpokenResponse | None = None
        self._tokens_left = 15_000_000

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
                return self._on_item_create(event["item"], event_id)
            case "conversation.item.delete":
                return self._on_item_delete(event["item_id"], event_id)
            case "conversation.item.retrieve":
                item = self._items.get(event["item_id"])
                if item is None:
                    return [self._error(no_item("retrieving", event["item_id"]), event_id)]
                return [self._event("conversation.item.retrieved", item=item.wire())]
        raise AssertionError(event["type"])  # check_client_event lets nothing else through

    # ------------------------------------------------------------------ session

    def _on_session_update(
        self, update: dict[str, Any], event_id: str | None
    ) -> list[dict[str, Any]]:
        problem = check_session_update(update)
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
            pcm = binascii.a2b_base64(audio, strict_mode=True)
        except binascii.Error:
            return [self._error(INVALID_AUDIO, event_id)]
        out: list[dict[str, Any]] = []
        for decision in self._input.append(pcm, vad_on=self._turn is not None):
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
        previous = self._last_item_id()
        item = Item(item_id, "user", audio=audio)
        self._items[item_id] = item
        self._pending = item_id
        out = [
            self._event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            self._event("conversation.item.added", previous_item_id=previous, item=item.wire()),
            self._event("conversation.item.done", previous_item_id=previous, item=item.wire()),
        ]
        if self.config["audio"]["input"]["transcription"]:
            seconds = round(len(audio) / 2 / 24000, 3)
            item.transcript = f"[caller speech {seconds:.1f} s]"
            out.append(
                self._event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=item.transcript,
                    usage={"type": "duration", "seconds": seconds},
                )
            )
        return out

    # ------------------------------------------------------------------ responses

    def _on_response_create(
        self, params: dict[str, Any], event_id: str | None, now: float
    ) -> list[dict[str, Any]]:
        for key in params:
            if key not in RESPONSE_KEYS:
                return [
                    self._error(
                        Problem(
                            "unknown_parameter",
                            f"Unknown parameter: 'response.{key}'.",
                            f"response.{key}",
                        ),
                        event_id,
                    )
                ]
        if self._active is not None:
            return [self._error(already_responding(self._active.id), event_id)]
        return self._start_response(now)

    def _on_response_cancel(
        self, response_id: str | None, event_id: str | None
    ) -> list[dict[str, Any]]:
        r = self._active
        if r is None or (response_id is not None and response_id != r.id):
            return [self._error(NO_ACTIVE_RESPONSE, event_id)]
        return self._finish(r, "cancelled", "client_cancelled")

    def _start_response(self, now: float) -> list[dict[str, Any]]:
        if self._pending is not None:
            pcm = self._items[self._pending].audio
            transcript = f"[echo of caller speech {len(pcm) / 48000:.1f} s]"
        else:
            pcm = self.greeting if self.greeting is not None else load_greeting()
            transcript = GREETING_TRANSCRIPT
        self._pending = None
        previous = self._last_item_id()
        item = Item(self._id("item"), "assistant", status="in_progress")
        self._items[item.id] = item
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
        item = self._items.get(item_id)
        role = None if item is None else "client item" if item.raw is not None else item.role
        sent = self.audio_sent_ms.get(item_id, 0.0)
        problem = check_truncate(role, item_id, content_index, audio_end_ms, sent)
        if problem:
            return [self._error(problem, event_id)]
        self.truncates.append((item_id, content_index, audio_end_ms))
        return [
            self._event(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=content_index,
                audio_end_ms=audio_end_ms,
            )
        ]

    def _on_item_create(self, raw: dict[str, Any], event_id: str | None) -> list[dict[str, Any]]:
        kind = raw.get("type")
        if kind not in ITEM_TYPES:
            return [self._error(bad_item_type(kind), event_id)]
        item_id = raw.get("id") or self._id("item")
        if item_id in self._items:
            return [
                self._error(
                    Problem(
                        "invalid_value", f"Item with id '{item_id}' already exists.", "item.id"
                    ),
                    event_id,
                )
            ]
        wire = {**raw, "id": item_id, "object": "realtime.item", "status": "completed"}
        previous = self._last_item_id()
        self._items[item_id] = Item(item_id, str(raw.get("role", "")), raw=wire)
        return [
            self._event("conversation.item.added", previous_item_id=previous, item=wire),
            self._event("conversation.item.done", previous_item_id=previous, item=wire),
        ]

    def _on_item_delete(self, item_id: str, event_id: str | None) -> list[dict[str, Any]]:
        if self._items.pop(item_id, None) is None:
            return [self._error(no_item("deleting", item_id), event_id)]
        if self._pending == item_id:
            self._pending = None
        return [self._event("conversation.item.deleted", item_id=item_id)]

    def _last_item_id(self) -> str | None:
        return next(reversed(self._items), None)

    # ------------------------------------------------------------------ plumbing

    def _expire(self) -> list[dict[str, Any]]:
        minutes = self.max_duration_s / 60
        span = f"{minutes:g} minutes" if minutes >= 1 else f"{self.max_duration_s:g} seconds"
        message = f"Your session hit the maximum duration of {span}."
        error = self._error(Problem("session_expired", message, None), None)
        self.closed = (1001, message)
        return [error]

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self._id("event"), **fields}

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
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return prefix + "_" + "".join(self._rng.choices(alphabet, k=21))
