"""The Call coordinator, pure: joined to a simulated Twilio far end with an injected clock."""

from __future__ import annotations

import base64
import logging
import random
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.ai.events import ACTIVE_RESPONSE as ACTIVE
from bridge.audio.formats import ModelAudio
from bridge.call import Call
from bridge.playout import ClearPlayback, Playout, SendAudio, SendMark
from bridge.sim.far_end import FarEnd
from bridge.uplink import UplinkPath

CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)
STEP = 0.005


class Pair:
    """A Call and Twilio's playback buffer, moved forward together in 5 ms steps."""

    def __init__(
        self, agent: Agent | None = None, *, lead_ms: int = 160, model_audio: ModelAudio = "pcm16"
    ) -> None:
        self.now = 0.0
        self.call = Call(
            agent=agent or Agent(local_barge_in=False, greeting_guard_ms=0),
            call_sid="CA" + "0" * 32,
            uplink=UplinkPath("mulaw", 8000, model_audio=model_audio),
            downlink_codec="mulaw",
            downlink_rate=8000,
            playout=Playout(bytes_per_ms=8.0, lead_ms=lead_ms),
            now=0.0,
        )
        self.far = FarEnd()
        self.to_model: list[dict[str, Any]] = []
        self.clears = 0
        self.max_ahead_ms = 0.0

    def deliver(self) -> None:
        outs, self.call.to_phone = self.call.to_phone, []
        for out in outs:
            match out:
                case SendAudio(payload=payload):
                    assert len(payload) % 160 == 0, "only whole 20 ms frames"
                    self.far.media(payload, self.now)
                case SendMark(name=name):
                    self.far.mark(name, self.now)
                case ClearPlayback():
                    self.clears += 1
                    for name in self.far.clear(self.now):
                        self.call.phone_mark(name, self.now)
        self.max_ahead_ms = max(self.max_ahead_ms, self.far.queued_ms)
        for event in self.call.to_model:
            CLIENT_EVENT.validate_python(event)  # every event is one the service accepts
        self.to_model += self.call.to_model
        self.call.to_model = []

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + STEP, 6)
            _, marks = self.far.advance(self.now)
            for name in marks:
                self.call.phone_mark(name, self.now)
            due = self.call.next_due(self.now)
            if due is not None and due <= self.now:
                self.call.tick(self.now)
            self.deliver()

    def model(self, event: rt.ServerEvent) -> None:
        self.call.model_event(event, self.now)
        self.deliver()

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.to_model if e["type"] == kind]


def tone(ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(24 * ms) / 24000
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def speak(
    pair: Pair, response_id: str, item_id: str, ms: int, *, chunks: int = 5, done: bool = True
) -> None:
    """The model sends ``ms`` of audio for one item at once (faster than real time)."""
    pair.model(rt.ResponseCreated(response_id))
    pair.model(rt.OutputItemAdded(response_id, item_id, "assistant", "message"))
    audio = tone(ms)
    step = len(audio) // chunks // 2 * 2
    for i in range(chunks):
        part = audio[i * step :] if i == chunks - 1 else audio[i * step : (i + 1) * step]
        pair.model(rt.AudioDelta(response_id, item_id, 0, part))
    if done:
        pair.model(rt.AudioDone(response_id, item_id, 0))
        pair.model(rt.ResponseDone(response_id, "completed"))


def test_connect_configures_the_session_and_greets():
    pair = Pair(Agent(greeting="Hi there."))
    pair.call.model_connected(0.0)
    pair.deliver()
    update, greet = pair.to_model
    assert update["type"] == "session.update"
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert greet["type"] == "response.create"
    assert "Hi there." in greet["response"]["instructions"]


def test_caller_audio_reaches_the_model_at_24k():
    pair = Pair()
    pair.call.model_connected(0.0)
    for i in range(5):
        pair.call.phone_audio(b"\xff" * 160, 0.02 * (i + 1))
    pair.deliver()
    appends = pair.sent("input_audio_buffer.append")
    sizes = [len(base64.b64decode(a["audio"])) for a in appends]
    # 20 ms at 24 kHz is 480 samples; the first frame is short by the filter's few-ms delay.
    assert sizes[1:] == [960] * 4
    assert 0 < sizes[0] <= 960


def test_playout_is_paced_and_complete():
    pair = Pair(lead_ms=160)
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 2000)
    assert pair.far.queued_ms <= 160 + 40
    pair.run(2.5)
    assert pair.max_ahead_ms <= 160 + 40
    assert abs(pair.far.played_ms("item_1") - 2000) <= 20
    assert not pair.call.playout.active


@pytest.mark.parametrize("seed", range(20))
def test_model_barge_in_truncates_at_what_was_heard(seed: int):
    rng = random.Random(seed)
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 3000, chunks=rng.randint(1, 12))
    pair.run(rng.uniform(0.05, 2.8))
    truth = pair.far.played_ms("item_1")
    pair.model(rt.SpeechStarted(1000, "item_user"))
    assert pair.clears == 1
    (truncate,) = pair.sent("conversation.item.truncate")
    assert truncate["item_id"] == "item_1"
    assert abs(truncate["audio_end_ms"] - truth) <= 20
    assert truncate["audio_end_ms"] <= 3000
    # The response had finished generating: nothing to cancel, so no error provoked.
    assert pair.sent("response.cancel") == []


def test_barge_in_while_generating_drops_the_rest_of_the_response():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 600, done=False)
    pair.run(0.3)
    heard = pair.far.played_ms("item_1")
    pair.model(rt.SpeechStarted(500, "item_user"))
    # Server VAD cancels the response itself; late audio of it must not be played.
    pair.model(rt.AudioDelta("resp_1", "item_1", 0, tone(500)))
    pair.model(rt.AudioDone("resp_1", "item_1", 0))
    pair.model(rt.ResponseDone("resp_1", "cancelled"))
    pair.run(1.0)
    assert abs(pair.far.played_ms("item_1") - heard) <= 20
    assert pair.sent("response.cancel") == []  # the model cancels on its own speech_started
    # A new response plays normally.
    speak(pair, "resp_2", "item_2", 400)
    pair.run(0.8)
    assert abs(pair.far.played_ms("item_2") - 400) <= 20


def test_no_truncate_when_nothing_was_heard():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 1000)
    pair.model(rt.SpeechStarted(0, "item_user"))  # same instant: nothing played yet
    assert pair.clears == 1
    assert pair.sent("conversation.item.truncate") == []


def test_no_barge_in_when_the_agent_is_silent():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 300)
    pair.run(1.0)
    pair.model(rt.SpeechStarted(900, "item_user"))
    assert pair.clears == 0
    assert pair.sent("conversation.item.truncate") == []


def test_client_interrupt_cancels_a_response_in_flight():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 1000, done=False)
    pair.run(0.5)
    pair.call.interrupt(pair.now)
    pair.deliver()
    assert pair.clears == 1
    (cancel,) = pair.sent("response.cancel")
    assert cancel["response_id"] == "resp_1"
    assert len(pair.sent("conversation.item.truncate")) == 1


def test_marks_echoed_on_clear_do_not_count_as_played():
    pair = Pair(lead_ms=400)
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 2000)
    pair.run(0.2)
    pair.model(rt.SpeechStarted(100, "item_user"))
    (truncate,) = pair.sent("conversation.item.truncate")
    assert truncate["audio_end_ms"] <= 220  # not the 400 ms that was buffered at Twilio
    assert pair.call.playout.played_ms("item_1") <= 220


def _local_pair() -> Pair:
    pair = Pair(Agent(local_barge_in=True, barge_in_min_ms=100, greeting_guard_ms=0))
    pair.call.model_connected(0.0)
    return pair


def loud_caller_frame() -> bytes:
    from bridge.audio.g711 import ulaw_encode

    t = np.arange(160) / 8000
    return ulaw_encode((np.sin(2 * np.pi * 300 * t) * 20000).astype(np.int16))


def talk_over(pair: Pair, frames: int = 8) -> None:
    """The caller talks loudly for ``frames`` 20 ms frames, in real time."""
    for _ in range(frames):
        pair.call.phone_audio(loud_caller_frame(), pair.now)
        pair.run(0.02)


def test_local_barge_in_clears_before_the_model_reacts_and_is_confirmed():
    pair = _local_pair()
    speak(pair, "resp_1", "item_1", 3000)
    pair.run(1.0)
    for _ in range(8):
        pair.call.phone_audio(loud_caller_frame(), pair.now)
        pair.run(0.02)
        if pair.clears:
            break
    assert pair.clears == 1
    truth = pair.far.played_ms("item_1")
    (truncate,) = pair.sent("conversation.item.truncate")
    assert abs(truncate["audio_end_ms"] - truth) <= 20
    pair.model(rt.SpeechStarted(1000, "item_user"))
    assert pair.clears == 1  # confirmation does not clear twice
    kinds = [e.kind for e in pair.call.events]
    assert "barge_in_confirmed" in kinds


def test_unconfirmed_local_barge_in_lets_the_agent_carry_on():
    pair = _local_pair()
    speak(pair, "resp_1", "item_1", 3000)
    pair.run(1.0)
    talk_over(pair)
    assert pair.clears == 1
    pair.run(2.0)  # the model never hears speech
    kinds = [e.kind for e in pair.call.events]
    assert "barge_in_unconfirmed" in kinds
    # The agent is asked to continue from its truncated item, once.
    assert len([e for e in pair.to_model if e["type"] == "response.create"]) == 2


def test_a_tick_when_next_due_says_settles_an_unconfirmed_barge_in():
    # Around t = 10 s, (t + 1.2) - t < 1.2 in floating point: a tick at the time next_due
    # named must still settle the barge-in, or a pacer that trusts next_due spins.
    pair = _local_pair()
    pair.now = 9.0
    speak(pair, "resp_1", "item_1", 3000)
    pair.run(0.9)
    call = pair.call
    now = pair.now
    while not call.barge_ins:
        now = round(now + 0.02, 6)
        call.phone_audio(loud_caller_frame(), now)
    assert 9.9 < call.barge_ins[-1].t <= 10.2
    due = call.next_due(now)
    assert due is not None
    call.tick(due)
    assert "barge_in_unconfirmed" in [e.kind for e in call.events]
    after = call.next_due(due)
    assert after is None or after > due


def test_local_barge_in_never_races_the_model_with_cancel_or_create():
    pair = _local_pair()
    speak(pair, "resp_1", "item_1", 3000, done=False)  # still generating
    pair.run(1.0)
    talk_over(pair)
    assert pair.clears == 1
    assert pair.sent("response.cancel") == []  # the model's own VAD cancels, if it hears
    pair.run(2.0)  # unconfirmed, and the response is still in flight
    creates = len(pair.sent("response.create"))
    pair.model(rt.AudioDone("resp_1", "item_1", 0))
    pair.model(rt.ResponseDone("resp_1", "completed"))
    # Only once it is done is the agent asked to carry on.
    assert len(pair.sent("response.create")) == creates + 1


def test_greeting_guard_blocks_local_barge_in():
    pair = Pair(Agent(local_barge_in=True, barge_in_min_ms=100, greeting_guard_ms=5000))
    pair.call.model_connected(0.0)
    speak(pair, "resp_g", "item_g", 3000)
    pair.run(0.5)
    for _ in range(20):
        pair.call.phone_audio(loud_caller_frame(), pair.now)
        pair.run(0.02)
    assert pair.clears == 0


def test_greeting_guard_lets_the_start_of_the_greeting_play_through_model_speech():
    pair = Pair(Agent(local_barge_in=False, greeting_guard_ms=1000))
    pair.call.model_connected(0.0)
    speak(pair, "resp_g", "item_g", 2000)
    pair.run(0.5)
    pair.model(rt.SpeechStarted(300, "item_user"))  # "Hello?" on pick-up
    assert pair.clears == 0
    pair.run(1.0)
    pair.model(rt.SpeechStarted(1300, "item_user"))  # after the guard: a real barge-in
    assert pair.clears == 1
    (truncate,) = pair.sent("conversation.item.truncate")
    assert abs(truncate["audio_end_ms"] - pair.far.played_ms("item_g")) <= 20


def test_text_input_becomes_a_user_message_and_a_response():
    pair = Pair()
    pair.call.model_connected(0.0)
    pair.deliver()
    pair.model(rt.ResponseCreated("resp_greeting"))
    pair.model(rt.ResponseDone("resp_greeting", "completed"))
    pair.call.text_input("What are your hours?", 0.1)
    pair.deliver()
    assert [e["type"] for e in pair.to_model[-2:]] == [
        "conversation.item.create",
        "response.create",
    ]


def test_typed_input_waits_for_a_finishing_response_before_asking_for_the_next():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 1000, done=False)
    pair.model(rt.AudioDone("resp_1", "item_1", 0))  # all audio here, response.done not yet
    pair.run(0.2)
    creates = len(pair.sent("response.create"))
    pair.call.text_input("Wait.", pair.now)
    pair.deliver()
    assert pair.sent("response.cancel") == []
    assert len(pair.sent("response.create")) == creates  # not yet: it would collide
    pair.model(rt.ResponseDone("resp_1", "completed"))
    assert len(pair.sent("response.create")) == creates + 1


def test_typing_again_before_the_response_is_created_waits_for_it():
    pair = Pair()
    pair.call.greet = False
    pair.call.model_connected(0.0)
    pair.deliver()
    pair.call.text_input("Hello?", 0.1)
    pair.call.text_input("Are you there?", 0.1)  # before response.created came back
    pair.deliver()
    assert len(pair.sent("conversation.item.create")) == 2
    assert len(pair.sent("response.create")) == 1  # a second would collide with the first
    assert pair.sent("response.cancel") == []
    pair.model(rt.ResponseCreated("resp_1"))
    assert len(pair.sent("response.create")) == 1
    pair.model(rt.ResponseDone("resp_1", "completed"))
    assert len(pair.sent("response.create")) == 2  # now the second message is answered
    pair.model(rt.ServerError("invalid_request_error", "rate_limit_exceeded", "slow down", None))
    pair.call.text_input("Hello again.", 0.3)
    pair.deliver()
    assert len(pair.sent("response.create")) == 3  # nothing left waiting forever


def _race(pair: Pair) -> None:
    """The server starts a response itself (its VAD heard the caller) just as our last
    response.create leaves: its response.created arrives first, then the error for ours."""
    ours = pair.sent("response.create")[-1]["event_id"]
    pair.model(rt.ResponseCreated("resp_server"))
    pair.model(rt.ServerError("invalid_request_error", ACTIVE, "busy", ours))


def test_a_request_crossing_the_models_own_response_is_a_race_not_a_bug(caplog):
    pair = _local_pair()
    speak(pair, "resp_1", "item_1", 3000)
    pair.run(1.0)
    talk_over(pair)
    pair.run(1.5)  # unconfirmed: the agent is asked to carry on
    creates = len(pair.sent("response.create"))
    with caplog.at_level(logging.INFO, logger="bridge"):
        _race(pair)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["crossed" in r.getMessage() for r in caplog.records] == [True]  # said, at INFO
    (error,) = [e for e in pair.call.events if e.kind == "model_error"]
    assert error.detail["category"] == "race"
    pair.model(rt.ResponseDone("resp_server", "completed"))
    # The model answered the caller: asking it to carry on as well would speak twice.
    assert len(pair.sent("response.create")) == creates


def test_typed_input_that_lost_a_race_is_answered_after_the_models_own_response():
    pair = Pair()
    pair.call.greet = False
    pair.call.model_connected(0.0)
    pair.call.text_input("Hello?", 0.1)
    pair.deliver()
    _race(pair)  # the server's response was created before our message reached it
    assert len(pair.sent("response.create")) == 1
    pair.model(rt.ResponseDone("resp_server", "completed"))
    assert len(pair.sent("response.create")) == 2  # the typed message is answered now


def test_an_unconfirmed_barge_in_does_not_ask_again_while_a_response_is_on_its_way():
    pair = _local_pair()
    speak(pair, "resp_1", "item_1", 3000)  # all generated, still playing
    pair.run(1.0)
    talk_over(pair)
    assert pair.clears == 1
    pair.call.text_input("Wait.", pair.now)  # a response is asked for, not created yet
    pair.deliver()
    creates = len(pair.sent("response.create"))
    pair.run(1.5)  # the local barge-in goes unconfirmed meanwhile
    assert "barge_in_unconfirmed" in [e.kind for e in pair.call.events]
    assert len(pair.sent("response.create")) == creates  # a second would collide


def test_stop_closes_the_call_and_stops_playout():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 1000)
    pair.call.phone_stopped(0.1)
    assert pair.call.closed == "caller hung up"
    pair.call.tick(0.5)
    assert pair.call.to_phone == [] or all(
        not isinstance(o, SendAudio) for o in pair.call.to_phone[-1:]
    )


def test_no_cancel_for_a_response_whose_audio_is_all_here():
    # Its response.done may already be on the way: a cancel would earn an error.
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 1000, done=False)
    pair.model(rt.AudioDone("resp_1", "item_1", 0))
    pair.run(0.3)
    pair.call.interrupt(pair.now)
    pair.deliver()
    assert pair.clears == 1
    assert pair.sent("response.cancel") == []
    assert len(pair.sent("conversation.item.truncate")) == 1


def test_barge_in_at_an_item_boundary_truncates_the_item_being_heard():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_a", 80)
    speak(pair, "resp_2", "item_b", 1000)
    # 120 ms in: item_a (80 ms) has played, item_b has played 40 ms; no echo is back yet
    # because the far end's echoes are held up.
    pair.now = 0.12
    pair.model(rt.SpeechStarted(100, "item_user"))
    (truncate,) = pair.sent("conversation.item.truncate")
    assert truncate["item_id"] == "item_b"
    assert abs(truncate["audio_end_ms"] - 40) <= 20


def test_audio_of_a_cancelled_response_is_never_played_even_items_announced_late():
    pair = Pair()
    pair.call.model_connected(0.0)
    pair.model(rt.ResponseCreated("resp_1"))
    pair.call.text_input("Actually, never mind.", pair.now)  # cancels resp_1
    pair.deliver()
    assert [e["response_id"] for e in pair.sent("response.cancel")] == ["resp_1"]
    pair.model(rt.OutputItemAdded("resp_1", "item_late", "assistant", "message"))
    pair.model(rt.AudioDelta("resp_1", "item_late", 0, tone(200)))
    pair.run(0.5)
    assert pair.far.played_ms("item_late") == 0


def test_the_greeting_guard_starts_with_the_greetings_first_audio():
    pair = Pair(Agent(local_barge_in=False, greeting_guard_ms=1000))
    pair.call.model_connected(0.0)
    pair.run(1.5)  # the real service takes a while to start speaking
    speak(pair, "resp_g", "item_g", 3000)
    pair.run(0.5)
    pair.model(rt.SpeechStarted(1800, "item_user"))
    assert pair.clears == 0  # still inside the guard, counted from first audio


def test_per_call_state_stays_flat_over_a_long_call():
    pair = Pair()
    pair.call.model_connected(0.0)
    for n in range(300):
        speak(pair, f"resp_{n}", f"item_{n}", 40)
        pair.run(0.06)
        if n % 3 == 0:
            pair.model(rt.SpeechStarted(0, "item_user"))
    call = pair.call
    assert (
        len(call._spoken) <= 32 and len(call._dropped) <= 32 and len(call._responses._stale) <= 32
    )
    assert len(call._responses._items) <= 1


# ---------------------------------------------------------------- model sessions come and go


def converse(pair: Pair, n: int, *, user: str, agent: str) -> None:
    """One turn: the caller speaks (item user_n), the agent answers (item_n) in full."""
    pair.model(rt.SpeechStarted(0, f"user_{n}"))
    pair.model(rt.SpeechStopped(500, f"user_{n}"))
    pair.model(rt.InputTranscript(f"user_{n}", user))
    speak(pair, f"resp_{n}", f"item_{n}", 400)
    pair.model(rt.TranscriptDone(f"item_{n}", agent))
    pair.run(0.8)


def replayed(pair: Pair) -> list[tuple[str, str]]:
    items = [e["item"] for e in pair.sent("conversation.item.create")]
    return [(i["role"], i["content"][0]["text"]) for i in items]


def test_a_new_session_is_configured_as_before_and_given_the_conversation_without_greeting():
    pair = Pair(Agent(greeting="Hi there.", local_barge_in=False, greeting_guard_ms=0))
    pair.call.model_connected(0.0)
    converse(pair, 1, user="What time is it?", agent="It is noon.")
    converse(pair, 2, user="Thanks.", agent="You are welcome.")
    first_update = pair.sent("session.update")[0]
    pair.to_model.clear()
    pair.call.model_lost(pair.now, "session expired")
    pair.call.model_connected(pair.now)
    pair.deliver()  # validates every event against the openai models
    update, *rest = pair.to_model
    assert update["type"] == "session.update"
    assert update["session"] == first_update["session"]
    assert replayed(pair) == [
        ("user", "What time is it?"),
        ("assistant", "It is noon."),
        ("user", "Thanks."),
        ("assistant", "You are welcome."),
    ]
    assistant = next(e for e in rest if e["item"]["role"] == "assistant")
    assert assistant["item"]["content"][0]["type"] == "output_text"
    assert pair.sent("response.create") == []  # no greeting, no answer until the caller talks
    kinds = [e.kind for e in pair.call.events]
    assert "model_lost" in kinds and "model_reconnected" in kinds


def test_the_replay_is_bounded_newest_kept():
    pair = Pair()
    pair.call.replay_max_items = 3
    pair.call.model_connected(0.0)
    for n in range(1, 6):
        converse(pair, n, user=f"user says {n}", agent=f"agent says {n}")
    pair.to_model.clear()
    pair.call.model_lost(pair.now, "dropped")
    pair.call.model_connected(pair.now)
    pair.deliver()
    assert replayed(pair) == [
        ("assistant", "agent says 4"),
        ("user", "user says 5"),
        ("assistant", "agent says 5"),
    ]


def test_an_answer_cut_by_a_barge_in_is_replayed_as_far_as_the_caller_heard_it():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 2000)
    text = "one two three four five six seven eight nine ten"
    pair.model(rt.TranscriptDone("item_1", text))
    pair.run(0.6)  # about a quarter heard
    pair.model(rt.SpeechStarted(1000, "user_1"))
    (barge,) = [e for e in pair.call.events if e.kind == "barge_in"]
    assert barge.detail["item_ms"] == 2000 and 400 < barge.detail["audio_end_ms"] < 800
    pair.to_model.clear()
    pair.call.model_lost(pair.now, "dropped")
    pair.call.model_connected(pair.now)
    pair.deliver()
    ((role, heard),) = replayed(pair)
    assert role == "assistant"
    assert heard.endswith("…") and text.startswith(heard[:-1])
    assert 5 <= len(heard) < len(text) / 2


def test_audio_in_flight_when_the_session_dies_plays_out_and_is_never_truncated_later():
    pair = Pair()
    pair.call.model_connected(0.0)
    speak(pair, "resp_1", "item_1", 1000, done=False)  # still streaming when the socket dies
    pair.model(rt.TranscriptDelta("item_1", "half of what"))
    pair.run(0.2)
    pair.call.model_lost(pair.now, "1006")
    pair.run(1.5)
    assert abs(pair.far.played_ms("item_1") - 1000) <= 20  # finished, nothing stuck
    assert not pair.call.playout.active
    # The new session; a barge-in on the old item (if it were playing) truncates nothing.
    pair.call.model_connected(pair.now)
    pair.deliver()
    assert ("assistant", "half of what") in replayed(pair)
    speak(pair, "resp_2", "item_2", 1000, done=False)
    pair.call.model_lost(pair.now, "1011")
    pair.run(0.3)
    pair.call.model_connected(pair.now)
    pair.model(rt.SpeechStarted(100, "user_9"))
    assert pair.clears == 1
    assert pair.sent("conversation.item.truncate") == []
    assert pair.sent("response.cancel") == []


@pytest.mark.parametrize(
    ("model_audio", "bytes_per_ms"), [("pcm16", 48), ("pcmu-in", 8), ("pcmu", 8)]
)
def test_caller_audio_between_sessions_is_held_bounded_and_sent_to_the_next(
    model_audio, bytes_per_ms
):
    pair = Pair(model_audio=model_audio)
    pair.call.model_connected(0.0)
    pair.deliver()
    (update,) = pair.sent("session.update")
    assert (update["session"]["audio"]["input"]["format"]["type"] == "audio/pcmu") == (
        bytes_per_ms == 8
    )
    pair.call.model_lost(0.0, "dropped")
    for i in range(500):  # 10 s of caller audio while there is no session
        pair.call.phone_audio(bytes([i % 256]) * 160, 0.02 * i)
    pair.deliver()
    assert pair.sent("input_audio_buffer.append") == []  # nothing to the dead socket
    pair.call.model_connected(10.0)
    pair.deliver()
    appends = [base64.b64decode(e["audio"]) for e in pair.sent("input_audio_buffer.append")]
    held = sum(len(a) for a in appends)
    # The latest 3 s, in the model's input format (PCM16 24 kHz, or the caller's μ-law).
    assert 2900 * bytes_per_ms <= held <= 3000 * bytes_per_ms
    if bytes_per_ms == 8:  # passed through: the newest frames, byte for byte
        assert b"".join(appends)[-160:] == bytes([499 % 256]) * 160
    (event,) = [e for e in pair.call.events if e.kind == "model_reconnected"]
    assert event.detail["held_ms"] >= 2900


def test_typed_input_between_sessions_is_answered_by_the_next():
    pair = Pair()
    pair.call.model_connected(0.0)
    pair.call.model_lost(0.0, "dropped")
    pair.call.text_input("hello?", 0.1)
    pair.deliver()
    assert pair.to_model == []
    pair.call.model_connected(0.5)
    pair.deliver()
    assert replayed(pair) == [("user", "hello?")]
    assert pair.to_model[-1]["type"] == "response.create"


def test_recycling_waits_for_a_quiet_moment():
    pair = Pair()
    call = pair.call
    call.recycle_after_s = 10.0
    call.model_connected(0.0)
    assert not call.recycle_due(5.0)  # too young
    pair.now = 10.0
    speak(pair, "resp_1", "item_1", 1000, done=False)
    assert not call.recycle_due(pair.now)  # a response in flight
    pair.model(rt.AudioDone("resp_1", "item_1", 0))
    pair.model(rt.ResponseDone("resp_1", "completed"))
    assert not call.recycle_due(pair.now)  # still playing
    pair.run(1.5)
    pair.model(rt.SpeechStarted(0, "user_1"))
    assert not call.recycle_due(pair.now)  # the caller is speaking
    pair.model(rt.SpeechStopped(400, "user_1"))
    assert call.recycle_due(pair.now)
    call.model_lost(pair.now, "recycled")
    assert not call.recycle_due(pair.now)


def test_model_errors_are_classified_and_none_ends_the_call():
    from bridge.ai.reconnect import classify_error

    pair = Pair()
    pair.call.model_connected(0.0)
    errors = [
        rt.ServerError("invalid_request_error", "invalid_value", "bad", "event_1"),
        rt.ServerError("rate_limit_error", "rate_limit_exceeded", "slow down", None),
        rt.ServerError("invalid_request_error", "session_expired", "60 minutes", None),
        rt.ServerError("server_error", None, "oops", None),
    ]
    assert [classify_error(e) for e in errors] == [
        "ours",
        "rate_limit",
        "session_expired",
        "other",
    ]
    for error in errors:
        pair.model(error)
    assert pair.call.closed is None
    kinds = [e.detail["category"] for e in pair.call.events if e.kind == "model_error"]
    assert kinds == ["ours", "rate_limit", "session_expired", "other"]


def test_an_utterance_the_old_session_dies_in_goes_to_the_next():
    pair = Pair()
    pair.call.model_connected(0.0)
    pair.model(rt.SpeechStarted(0, "user_1"))
    for i in range(50):  # 1 s of speech reaches the old session, then it dies
        pair.call.phone_audio(b"\x00" * 160, 0.02 * i)
    pair.call.model_lost(1.0, "1006")
    for i in range(25):  # 0.5 s more while there is none
        pair.call.phone_audio(b"\x00" * 160, 1.0 + 0.02 * i)
    pair.deliver()
    pair.to_model.clear()
    pair.call.model_connected(1.5)
    pair.deliver()
    held = sum(len(base64.b64decode(e["audio"])) for e in pair.sent("input_audio_buffer.append"))
    assert 1450 * 48 <= held <= 1500 * 48  # the whole utterance so far


def test_nothing_is_held_between_utterances_while_connected():
    pair = Pair()
    pair.call.model_connected(0.0)
    pair.model(rt.SpeechStarted(0, "user_1"))
    for i in range(50):
        pair.call.phone_audio(b"\x00" * 160, 0.02 * i)
    pair.model(rt.SpeechStopped(900, "user_1"))
    for i in range(50):
        pair.call.phone_audio(b"\x00" * 160, 1.0 + 0.02 * i)
    pair.call.model_lost(2.0, "1006")
    pair.deliver()
    pair.to_model.clear()
    pair.call.model_connected(2.1)
    pair.deliver()
    assert pair.sent("input_audio_buffer.append") == []


def test_comfort_noise_while_the_first_session_opens_is_cleared_when_it_does():
    pair = Pair()
    pair.call.hold(0.0, 4000)
    pair.call.hold(0.5, 4000)  # once only
    outs = pair.call.to_phone
    assert all(isinstance(o, SendAudio) for o in outs)
    noise = b"".join(o.payload for o in outs if isinstance(o, SendAudio))
    assert 3960 * 8 <= len(noise) <= 4000 * 8 and len(set(noise)) > 1  # ~4 s of μ-law noise
    pair.call.to_phone = []
    pair.call.model_connected(1.0)
    assert pair.call.to_phone == [ClearPlayback()]
    pair.call.model_lost(2.0, "dropped")
    pair.call.hold(2.0, 4000)  # not after the first session: the agent has spoken
    assert pair.call.to_phone == [ClearPlayback()]
