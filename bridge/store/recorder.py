"""``CallRecorder``: a Call's timeline (``bridge.call.CallEvent``) turned into a record.

Sans-I/O: no asyncio, no database, no clock (times come with the events and the
arguments). It must not touch the Call (it only reads its events), the database or the
writer. Phone numbers enter raw and leave masked (``bridge.privacy.mask_number``); nothing
here logs a transcript.

Event kinds and detail keys the recorder reads (a key the Call does not send yet is
optional; sending it later needs no change here):

=================== ============================================================
``model_connected`` the first one is the answer time; each further one a reconnect
``model_lost``      ``reason``: the session was lost (a ``ModelReconnect`` begins)
``model_reconnected`` ``session``, ``replayed``, ``held_ms``: a new session took over
``speech_started``  the start time of the caller's next transcribed turn
``transcript``      ``role`` ("user"/"assistant"), ``text``; optional ``item_id``
``transcript_delta`` ``role`` "assistant", ``text``; optional ``item_id``
``user_text``       optional ``text``: typed input becomes a user turn
``barge_in``        ``trigger``, ``item_id``, ``audio_end_ms`` (what the caller heard of
                    the item); optional ``item_ms``: the item's audio length in ms as
                    far as the model sent it. With both, the agent's text is cut in
                    proportion; without ``item_ms`` the turn keeps its full text and is
                    only marked truncated (with ``heard_ms``)
``response_done``   optional ``usage``: the Realtime ``response.done`` usage object
                    (``input_tokens``, ``output_tokens``, ``total_tokens``), summed
``tool_call``       ``name``, ``latency_ms``, ``outcome`` (none are emitted today)
``dtmf``            ``digit`` (kept as the digits and as ``DtmfPress``es with times)
``closed``          ``reason``: the end time and end reason
=================== ============================================================

Without ``item_id`` on transcripts, a barge-in applies to the assistant turn being
spoken (deltas seen, no final transcript yet) or else to the latest assistant turn.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bridge.privacy import mask_number
from bridge.store.records import (
    BargeInRecord,
    CallRecord,
    Direction,
    DtmfPress,
    ModelReconnect,
    ResponseLatency,
    Role,
    TokenUsage,
    ToolCallRecord,
    Turn,
    check_aware,
    truncate_text,
)

if TYPE_CHECKING:
    from bridge.call import Call, CallEvent

logger = logging.getLogger(__name__)

# A record's memory stays bounded however long or odd the call; past these, more is
# not recorded (a one-hour call has a few hundred turns).
MAX_TURNS = 2000
MAX_BARGE_INS = 500
MAX_TOOL_CALLS = 500
MAX_DTMF = 256
MAX_SESSIONS = 200
_PENDING_SPEECH = 8
_PENDING_CUTS = 8


@dataclass
class _TurnDraft:
    role: Role
    started: float  # seconds since the call started
    text: str = ""
    item_id: str | None = None
    final: bool = False
    heard_ms: int | None = None  # set by a barge-in
    item_ms: float | None = None

    def turn(self, origin: datetime) -> Turn:
        text, truncated = self.text, self.heard_ms is not None
        if self.heard_ms is not None and self.item_ms is not None:
            truncated = self.heard_ms < self.item_ms
            text = truncate_text(text, self.heard_ms, self.item_ms)
        return Turn(
            self.role,
            text,
            origin + timedelta(seconds=self.started),
            truncated=truncated,
            heard_ms=self.heard_ms if truncated else None,
        )


class CallRecorder:
    """Builds a ``CallRecord`` from one Call's events.

    Attach ``observe`` to the call's runner (``CallRunner(observers=[recorder.observe])``)
    or ``feed`` it events; when the call is over, ``finish`` gives the record.
    ``started_at`` is the wall-clock time of the instant the Call's clock counts from
    (event ``t`` is seconds since then). ``from_number``/``to_number`` are raw: they are
    masked here. Never raises on odd events: an observer runs beside the audio path.
    """

    def __init__(
        self,
        *,
        call_id: str,
        leg: str,
        agent: str,
        started_at: datetime,
        direction: Direction = "inbound",
        from_number: str = "",
        to_number: str = "",
    ) -> None:
        check_aware("started_at", started_at)
        self.call_id = call_id
        self.leg = leg
        self.agent = agent
        self.direction: Direction = direction
        self.started_at = started_at
        self.from_ = mask_number(from_number)
        self.to = mask_number(to_number)
        self._turns: list[_TurnDraft] = []
        self._speaking: _TurnDraft | None = None  # assistant turn with deltas, not final
        self._speech_starts: deque[float] = deque(maxlen=_PENDING_SPEECH)
        self._barge_ins: list[BargeInRecord] = []
        self._tool_calls: list[ToolCallRecord] = []
        self._dtmf: list[DtmfPress] = []
        self._sessions: list[ModelReconnect] = []
        self._reconnects = 0
        self._pending_cuts: dict[str, tuple[int, float | None]] = {}
        self._usage = TokenUsage()
        self._connects = 0
        self._answered: float | None = None
        self._last_t = 0.0
        self._closed: tuple[float, str] | None = None
        self._finished: CallRecord | None = None
        self._latencies: list[ResponseLatency] = []

    @classmethod
    def for_call(
        cls,
        call: Call,
        *,
        leg: str,
        now: float,
        wall_now: datetime,
        direction: Direction = "inbound",
        from_number: str = "",
        to_number: str = "",
    ) -> CallRecorder:
        """A recorder for ``call``, its start placed on the wall clock.

        ``now`` (the Call's clock, e.g. ``time.monotonic()``) and ``wall_now``
        (``datetime.now(UTC)``) are read together, at any moment of the call.
        """
        return cls(
            call_id=call.call_sid,
            leg=leg,
            agent=call.agent.name,
            started_at=wall_now - timedelta(seconds=now - call.started_at),
            direction=direction,
            from_number=from_number,
            to_number=to_number,
        )

    # ------------------------------------------------------------------ input

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        """A ``bridge.runner.Observer``."""
        self.feed(events)

    def feed(self, events: Iterable[CallEvent]) -> None:
        for event in events:
            self._last_t = max(self._last_t, event.t)
            try:
                self._apply(event.t, event.kind, event.detail)
            except Exception as exc:  # a malformed detail costs its event, not the record
                logger.warning(
                    "call %s: record skipped a %s event: %s", self.call_id, event.kind, exc
                )

    def _apply(self, t: float, kind: str, detail: Mapping[str, Any]) -> None:
        match kind:
            case "model_connected":
                self._connects += 1
                if self._answered is None:
                    self._answered = t
            case "speech_started":
                self._speech_starts.append(t)
            case "transcript":
                text = _text(detail.get("text"))
                if detail.get("role") == "user":
                    started = self._speech_starts.popleft() if self._speech_starts else t
                    self._add_turn(_TurnDraft("user", min(started, t), text, final=True))
                elif detail.get("role") == "assistant":
                    self._assistant_final(t, text, _str_or_none(detail.get("item_id")))
            case "transcript_delta" if detail.get("role") == "assistant":
                self._assistant_delta(
                    t, _text(detail.get("text")), _str_or_none(detail.get("item_id"))
                )
            case "user_text" if isinstance(detail.get("text"), str):
                self._add_turn(_TurnDraft("user", t, detail["text"], final=True))
            case "barge_in":
                self._barge_in(t, detail)
            case "response_done":
                usage = detail.get("usage")
                if isinstance(usage, Mapping):
                    self._usage += TokenUsage.from_realtime(usage)
            case "tool_call" if len(self._tool_calls) < MAX_TOOL_CALLS:
                latency = detail.get("latency_ms")
                self._tool_calls.append(
                    ToolCallRecord(
                        name=_text(detail.get("name")) or "?",
                        latency_ms=max(float(latency), 0.0)
                        if isinstance(latency, int | float)
                        else 0.0,
                        outcome=_text(detail.get("outcome")) or "unknown",
                        at=self._wall(t),
                    )
                )
            case "dtmf" if len(self._dtmf) < MAX_DTMF:
                digit = detail.get("digit")
                if isinstance(digit, str) and len(digit) == 1:
                    self._dtmf.append(DtmfPress(self._wall(t), digit))
            case "model_lost" if len(self._sessions) < MAX_SESSIONS:
                reason = _text(detail.get("reason"))[:200] or "lost"
                self._sessions.append(ModelReconnect(self._wall(t), reason))
            case "model_reconnected":
                self._reconnected(t, detail)
            case "closed" if self._closed is None:
                self._closed = (t, _text(detail.get("reason")) or "closed")
            case _:
                pass

    def _reconnected(self, t: float, detail: Mapping[str, Any]) -> None:
        self._reconnects += 1
        session, replayed, held = (detail.get(key) for key in ("session", "replayed", "held_ms"))
        last = self._sessions[-1] if self._sessions else None
        if last is None or last.at is not None:
            return  # no model_lost seen (or over the cap): counted only
        self._sessions[-1] = ModelReconnect(
            last.lost_at,
            last.reason,
            self._wall(t),
            session if isinstance(session, int) and session > 0 else None,
            max(int(replayed), 0) if isinstance(replayed, int | float) else 0,
            max(int(held), 0) if isinstance(held, int | float) else 0,
        )

    def _add_turn(self, draft: _TurnDraft) -> None:
        if len(self._turns) < MAX_TURNS:
            self._turns.append(draft)

    def _assistant_delta(self, t: float, text: str, item_id: str | None) -> None:
        draft = self._speaking
        if draft is None or (item_id is not None and draft.item_id not in (None, item_id)):
            draft = self._speaking = self._new_assistant_turn(t, item_id)
        draft.text += text

    def _assistant_final(self, t: float, text: str, item_id: str | None) -> None:
        draft = self._speaking
        if draft is not None and item_id is not None and draft.item_id not in (None, item_id):
            draft = None  # a final transcript of another item: a turn of its own
        if draft is None:
            draft = self._new_assistant_turn(t, item_id)
        self._speaking = None
        if text or not draft.text:  # the final transcript wins over the deltas
            draft.text = text
        draft.final = True
        draft.item_id = draft.item_id or item_id

    def _barge_in(self, t: float, detail: Mapping[str, Any]) -> None:
        heard = detail.get("audio_end_ms")
        heard_ms = max(int(heard), 0) if isinstance(heard, int | float) else None
        if len(self._barge_ins) < MAX_BARGE_INS:
            trigger = _text(detail.get("trigger")) or "unknown"
            self._barge_ins.append(BargeInRecord(self._wall(t), trigger, heard_ms))
        item_id = _str_or_none(detail.get("item_id"))
        if item_id is None or heard_ms is None:
            return  # nothing was playing: no words were cut
        item_ms = detail.get("item_ms")
        cut = (
            heard_ms,
            float(item_ms) if isinstance(item_ms, int | float) and item_ms > 0 else None,
        )
        draft = self._cut_turn(item_id)
        if draft is None:
            # Its transcript has not started yet: cut it when it does.
            self._pending_cuts[item_id] = cut
            while len(self._pending_cuts) > _PENDING_CUTS:
                del self._pending_cuts[next(iter(self._pending_cuts))]
        elif draft.heard_ms is None:
            draft.heard_ms, draft.item_ms = cut

    def _cut_turn(self, item_id: str) -> _TurnDraft | None:
        """The assistant turn a barge-in on ``item_id`` cut, if its transcript began.

        A turn that knows its item is matched exactly; one that does not (the Call sends
        no ``item_id`` with transcripts today) is taken to be the one being spoken, or
        else the latest.
        """
        for draft in reversed(self._turns):
            if draft.role == "assistant" and draft.item_id == item_id:
                return draft
        if self._speaking is not None and self._speaking.item_id is None:
            return self._speaking
        for draft in reversed(self._turns):
            if draft.role == "assistant":
                return draft if draft.item_id is None else None
        return None

    def _new_assistant_turn(self, t: float, item_id: str | None) -> _TurnDraft:
        draft = _TurnDraft("assistant", t, item_id=item_id)
        if item_id is not None and item_id in self._pending_cuts:
            draft.heard_ms, draft.item_ms = self._pending_cuts.pop(item_id)
        self._add_turn(draft)
        return draft

    def answered(self, t: float, ms: float) -> None:
        """An answer's first audio reached the caller at ``t``, ``ms`` after they stopped."""
        if len(self._latencies) < MAX_TURNS and ms >= 0:
            self._latencies.append(ResponseLatency(self._wall(t), ms))

    # ------------------------------------------------------------------ output

    @property
    def closed(self) -> bool:
        """The Call said it closed."""
        return self._closed is not None

    def record(self, *, ended_at: datetime | None = None, reason: str | None = None) -> CallRecord:
        """The record so far; a ``closed`` event's time and reason win over the arguments."""
        check_aware("ended_at", ended_at)
        if self._closed is not None:
            ended_at, reason = self._wall(self._closed[0]), self._closed[1]
        turns = sorted(
            (d.turn(self.started_at) for d in self._turns), key=lambda turn: turn.started_at
        )
        return CallRecord(
            id=self.call_id,
            leg=self.leg,
            direction=self.direction,
            agent=self.agent,
            from_=self.from_,
            to=self.to,
            started_at=self.started_at,
            answered_at=None if self._answered is None else self._wall(self._answered),
            ended_at=ended_at,
            end_reason=reason,
            turns=tuple(turns),
            barge_ins=tuple(self._barge_ins),
            tool_calls=tuple(self._tool_calls),
            dtmf="".join(press.digit for press in self._dtmf),
            usage=self._usage,
            # The Call says ``model_reconnected`` for a later session; a second
            # ``model_connected`` counts too.
            reconnects=self._reconnects + max(self._connects - 1, 0),
            latencies=tuple(self._latencies),
            dtmf_presses=tuple(self._dtmf),
            model_sessions=tuple(self._sessions),
        )

    def finish(self, *, ended_at: datetime | None = None, reason: str | None = None) -> CallRecord:
        """The final record, once: later calls return the same one.

        For a call that never emitted ``closed`` (its model was unreachable, say), the
        arguments say when and why it ended; ``ended_at`` defaults to the last event.
        """
        if self._finished is None:
            if ended_at is None and self._closed is None:
                ended_at = self._wall(self._last_t)
            self._finished = self.record(ended_at=ended_at, reason=reason or "ended")
        return self._finished

    def _wall(self, t: float) -> datetime:
        return self.started_at + timedelta(seconds=t)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
