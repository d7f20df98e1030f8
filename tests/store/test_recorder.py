"""The recorder, pure: a Call's events (hand-written, and from a real Call) to a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.call import Call, CallEvent
from bridge.playout import ClearPlayback, Playout, SendAudio, SendMark
from bridge.sim.far_end import FarEnd
from bridge.store.recorder import CallRecorder
from bridge.store.records import (
    BargeInRecord,
    CallRecord,
    DtmfPress,
    ModelReconnect,
    TokenUsage,
    ToolCallRecord,
    Turn,
    truncate_text,
)
from bridge.uplink import UplinkPath

T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def recorder(**kwargs: Any) -> CallRecorder:
    options: dict[str, Any] = {
        "call_id": "CA" + "1" * 32,
        "leg": "phone",
        "agent": "support",
        "started_at": T0,
        "from_number": "+15551231234",
        "to_number": "sip:+15559876543@example.sip.twilio.com",
    }
    return CallRecorder(**(options | kwargs))


def ev(t: float, kind: str, **detail: Any) -> CallEvent:
    return CallEvent(t, kind, detail)


def test_the_recorder_refuses_a_naive_start():
    with pytest.raises(ValueError, match="timezone"):
        recorder(started_at=datetime(2025, 1, 1))


# ---------------------------------------------------------------------- the recorder


def conversation(*, item_ms: bool) -> list[CallEvent]:
    """A phone call as the Call reports it: greeting, a question, an answer cut short."""
    cut: dict[str, Any] = {"item_ms": 4000} if item_ms else {}
    usage = {"input_tokens": 120, "output_tokens": 80, "total_tokens": 200}
    return [
        ev(0.35, "model_connected"),
        ev(0.4, "session_created"),
        ev(0.9, "transcript_delta", role="assistant", text="Hello! "),
        ev(0.95, "agent_audio_start"),
        ev(1.0, "transcript_delta", role="assistant", text="How can I help?"),
        ev(1.1, "transcript", role="assistant", text="Hello! How can I help?"),
        ev(1.2, "response_done", status="completed", usage=usage),
        ev(3.0, "speech_started", audio_start_ms=2900),
        ev(4.1, "speech_stopped", audio_end_ms=4000),
        # The model answers before the caller's words are transcribed.
        ev(4.5, "transcript_delta", role="assistant", text="Our opening hours are "),
        ev(4.6, "transcript", role="user", text="When are you open?"),
        ev(4.7, "transcript_delta", role="assistant", text="nine to five on weekdays."),
        ev(
            4.8,
            "transcript",
            role="assistant",
            text="Our opening hours are nine to five on weekdays.",
        ),
        ev(4.9, "response_done", status="completed", usage=usage),
        ev(5.0, "dtmf", digit="4"),
        ev(5.2, "dtmf", digit="2"),
        ev(6.0, "barge_in", trigger="local", item_id="item_2", audio_end_ms=2000, **cut),
        ev(6.3, "speech_started", audio_start_ms=6100),
        ev(6.3, "barge_in_confirmed"),
        ev(7.5, "transcript", role="user", text="Thanks, bye."),
        ev(7.6, "tool_call", name="end_call", latency_ms=12.5, outcome="ok"),
        ev(7.8, "model_lost", reason="session expired"),
        ev(8.0, "model_reconnected", session=2, replayed=5, held_ms=120),
        ev(9.0, "closed", reason="caller hung up"),
    ]


def test_recorder_builds_the_whole_record_and_cuts_the_interrupted_answer():
    rec = recorder()
    rec.feed(conversation(item_ms=True))
    record = rec.finish(ended_at=at(99), reason="ignored: the Call said why")
    answer = "Our opening hours are nine to five on weekdays."
    heard = truncate_text(answer, 2000, 4000)
    assert heard == "Our opening hours are"
    assert record == CallRecord(
        id="CA" + "1" * 32,
        leg="phone",
        direction="inbound",
        agent="support",
        from_="***1234",
        to="sip:***6543@example.sip.twilio.com",
        started_at=T0,
        answered_at=at(0.35),
        ended_at=at(9.0),
        end_reason="caller hung up",
        turns=(
            Turn("assistant", "Hello! How can I help?", at(0.9)),
            Turn("user", "When are you open?", at(3.0)),
            Turn("assistant", heard, at(4.5), truncated=True, heard_ms=2000),
            Turn("user", "Thanks, bye.", at(6.3)),
        ),
        barge_ins=(BargeInRecord(at(6.0), "local", 2000),),
        tool_calls=(ToolCallRecord("end_call", 12.5, "ok", at(7.6)),),
        dtmf="42",
        usage=TokenUsage(240, 160, 400),
        reconnects=1,
        dtmf_presses=(DtmfPress(at(5.0), "4"), DtmfPress(at(5.2), "2")),
        model_sessions=(ModelReconnect(at(7.8), "session expired", at(8.0), 2, 5, 120),),
    )
    assert record.duration_s == 9.0
    assert rec.finish() is record  # once


def test_without_the_items_length_the_turn_is_marked_but_keeps_its_words():
    rec = recorder()
    rec.feed(conversation(item_ms=False))
    answer = rec.finish().turns[2]
    assert answer.text == "Our opening hours are nine to five on weekdays."
    assert (answer.truncated, answer.heard_ms) == (True, 2000)


def test_a_barge_in_after_the_whole_item_played_cuts_nothing():
    rec = recorder()
    rec.feed(conversation(item_ms=False)[:14])
    rec.feed([ev(6.0, "barge_in", trigger="model", item_id="i", audio_end_ms=4000, item_ms=4000)])
    assert not rec.finish().turns[-1].truncated


def test_a_barge_in_while_the_answer_is_still_coming_cuts_it_when_it_ends():
    """The final transcript of a cancelled response arrives after the barge-in."""
    rec = recorder()
    rec.feed(
        [
            ev(1.0, "transcript_delta", role="assistant", text="Let me think about "),
            ev(1.5, "barge_in", trigger="model", item_id="i1", audio_end_ms=300, item_ms=1200),
            ev(1.6, "transcript", role="assistant", text="Let me think about that one."),
        ]
    )
    (turn,) = rec.finish().turns
    assert (turn.text, turn.truncated, turn.heard_ms) == ("Let me", True, 300)


def test_transcripts_with_item_ids_are_matched_exactly():
    rec = recorder()
    rec.feed(
        [
            ev(1.0, "transcript", role="assistant", text="One two three four", item_id="a"),
            ev(2.0, "barge_in", trigger="model", item_id="b", audio_end_ms=500, item_ms=1000),
            ev(2.1, "transcript_delta", role="assistant", text="five six ", item_id="b"),
            ev(2.2, "transcript", role="assistant", text="five six seven eight", item_id="b"),
        ]
    )
    first, second = rec.finish().turns
    assert (first.text, first.truncated) == ("One two three four", False)
    assert (second.text, second.truncated) == ("five six", True)


def test_a_barge_in_with_nothing_playing_cuts_no_words():
    rec = recorder()
    rec.feed(
        [
            ev(1.0, "transcript", role="assistant", text="Hello there"),
            ev(2.0, "barge_in", trigger="client", item_id=None, audio_end_ms=None),
        ]
    )
    record = rec.finish()
    assert record.barge_ins == (BargeInRecord(at(2.0), "client", None),)
    assert not record.turns[0].truncated


def test_a_call_that_never_closed_ends_as_its_shell_says():
    rec = recorder(leg="softphone", direction="outbound", from_number="", to_number="12")
    record = rec.finish(ended_at=at(0.5), reason="model unreachable: OSError")
    assert (record.ended_at, record.end_reason, record.answered_at) == (
        at(0.5),
        "model unreachable: OSError",
        None,
    )
    assert (record.from_, record.to, record.direction) == ("-", "***", "outbound")
    assert not rec.closed


def test_odd_events_are_ignored_not_raised():
    rec = recorder()
    rec.feed(
        [
            ev(0.1, "transcript", role="user"),
            ev(0.2, "transcript", role="narrator", text="x"),
            ev(0.3, "barge_in"),
            ev(0.4, "barge_in", item_id="i", audio_end_ms="loud"),
            ev(0.5, "response_done", usage="lots"),
            ev(0.6, "dtmf", digit="too long"),
            ev(0.7, "dtmf"),
            ev(0.8, "tool_call", latency_ms=-5),
            ev(0.9, "something_new", whatever=object()),
            ev(1.0, "user_text", chars=5),
            ev(1.1, "user_text", text="typed words"),
        ]
    )
    record = rec.finish()
    assert [t.text for t in record.turns] == ["", "typed words"]
    assert record.dtmf == ""
    assert record.tool_calls == (ToolCallRecord("?", 0.0, "unknown", at(0.8)),)
    assert record.ended_at == at(1.1)


def test_the_record_stays_bounded():
    rec = recorder()
    rec.feed(ev(i * 0.01, "dtmf", digit="1") for i in range(10_000))
    rec.feed(ev(100 + i * 0.01, "transcript", role="user", text="x") for i in range(10_000))
    record = rec.finish()
    assert len(record.dtmf) == 256
    assert len(record.turns) == 2000


# ---------------------------------------------------------------------- with the real Call


class Line:
    """A Call joined to Twilio's playback buffer, moved forward in 5 ms steps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.call = Call(
            agent=Agent(local_barge_in=False, greeting_guard_ms=0, greeting=""),
            call_sid="CA" + "2" * 32,
            uplink=UplinkPath("mulaw", 8000),
            downlink_codec="mulaw",
            downlink_rate=8000,
            playout=Playout(bytes_per_ms=8.0, lead_ms=160),
            now=0.0,
        )
        self.far = FarEnd()
        self.now = 0.25  # the shell attaches the recorder a moment after making the Call
        self.recorder = CallRecorder.for_call(
            self.call,
            leg="phone",
            now=self.now,
            wall_now=at(0.25),
            from_number="+15551231234",
            to_number="sip:+15559876543@example.sip.twilio.com",
        )

    def deliver(self) -> None:
        outs, self.call.to_phone = self.call.to_phone, []
        for out in outs:
            match out:
                case SendAudio(payload=payload):
                    self.far.media(payload, self.now)
                case SendMark(name=name):
                    self.far.mark(name, self.now)
                case ClearPlayback():
                    for name in self.far.clear(self.now):
                        self.call.phone_mark(name, self.now)
        self.call.to_model = []
        events, self.call.events = self.call.events, []
        self.recorder.observe(self.call, events)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + 0.005, 6)
            for name in self.far.advance(self.now)[1]:
                self.call.phone_mark(name, self.now)
            due = self.call.next_due(self.now)
            if due is not None and due <= self.now:
                self.call.tick(self.now)
            self.deliver()

    def model(self, event: rt.ServerEvent) -> None:
        self.call.model_event(event, self.now)
        self.deliver()

    def say(self, response_id: str, item_id: str, text: str, ms: int) -> None:
        """The model sends the whole answer at once, faster than real time."""
        self.model(rt.ResponseCreated(response_id))
        self.model(rt.OutputItemAdded(response_id, item_id, "assistant", "message"))
        words = text.split(" ")
        for i, word in enumerate(words):
            self.model(rt.TranscriptDelta(item_id, word if i == 0 else " " + word))
            self.model(
                rt.AudioDelta(response_id, item_id, 0, b"\x00\x10" * (24 * ms // len(words)))
            )
        self.model(rt.TranscriptDone(item_id, text))
        self.model(rt.AudioDone(response_id, item_id, 0))
        usage = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}
        self.model(rt.ResponseDone(response_id, "completed", usage))


def test_recorder_follows_a_real_call_with_a_barge_in():
    line = Line()
    line.call.model_connected(line.now)
    line.deliver()
    line.model(rt.SpeechStarted(100, "u1"))
    line.run(0.8)
    line.model(rt.SpeechStopped(800, "u1"))
    line.model(rt.InputTranscript("u1", "Tell me about your plans."))
    answer = "We have three plans: basic, plus and premium, and each has a free trial month."
    line.say("r1", "a1", answer, 3000)
    line.run(1.2)  # the caller hears about 1.2 s of 3 s
    line.model(rt.SpeechStarted(2300, "u2"))  # and talks over the agent
    line.run(0.5)
    line.model(rt.InputTranscript("u2", "Just the price, please."))
    line.call.phone_stopped(line.now)
    line.deliver()

    record = line.recorder.finish()
    assert (record.id, record.agent, record.started_at) == (line.call.call_sid, "default", T0)
    assert [(t.role, t.truncated) for t in record.turns] == [
        ("user", False),
        ("assistant", True),
        ("user", False),
    ]
    assert record.turns[0].started_at == at(0.25)  # when the caller began to speak
    (barge_in,) = record.barge_ins
    assert barge_in.trigger == "model"
    assert barge_in.audio_end_ms is not None and 1000 <= barge_in.audio_end_ms <= 1400
    cut = record.turns[1]
    assert cut.heard_ms == barge_in.audio_end_ms
    # Today the Call does not send the item's length: the words stay whole. Once it
    # sends ``item_ms`` the text is what the caller heard.
    assert answer.startswith(cut.text)
    if cut.text != answer:
        assert cut.text == truncate_text(answer, barge_in.audio_end_ms, 3000)
    assert record.end_reason == "caller hung up"
    # ``response_done`` carries no usage yet; once it does, it is summed.
    assert record.usage in (TokenUsage(), TokenUsage(50, 30, 80))
    assert record.answered_at == at(0.25)


def test_a_second_model_connected_still_counts_and_a_lost_session_never_replaced_is_kept():
    rec = recorder()
    rec.feed(
        [
            ev(0.3, "model_connected"),
            ev(2.0, "model_connected"),  # a leg that reports each session this way
            ev(5.0, "model_lost", reason="the model socket is closing"),
            ev(5.5, "closed", reason="caller hung up"),
        ]
    )
    record = rec.finish()
    assert record.reconnects == 1
    assert record.model_sessions == (ModelReconnect(at(5.0), "the model socket is closing"),)
