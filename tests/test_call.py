"""The Call coordinator, pure: joined to a simulated Twilio far end with an injected clock."""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from bridge.ai import events as rt
from bridge.audio.transcode import Uplink
from bridge.call import Call
from bridge.config import Agent
from bridge.playout import ClearPlayback, Playout, SendAudio, SendMark
from bridge.sim.far_end import FarEnd

CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)
STEP = 0.005


class Pair:
    """A Call and Twilio's playback buffer, moved forward together in 5 ms steps."""

    def __init__(self, agent: Agent | None = None, *, lead_ms: int = 160) -> None:
        self.now = 0.0
        self.call = Call(
            agent=agent or Agent(local_barge_in=False, greeting_guard_ms=0),
            call_sid="CA" + "0" * 32,
            uplink=Uplink("mulaw", 8000),
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
    for _ in range(8):
        pair.call.phone_audio(loud_caller_frame(), pair.now)
        pair.run(0.02)
    assert pair.clears == 1
    pair.run(2.0)  # the model never hears speech
    kinds = [e.kind for e in pair.call.events]
    assert "barge_in_unconfirmed" in kinds
    # The agent is asked to continue from its truncated item, once.
    assert len([e for e in pair.to_model if e["type"] == "response.create"]) == 2


def test_local_barge_in_never_races_the_model_with_cancel_or_create():
    pair = _local_pair()
    speak(pair, "resp_1", "item_1", 3000, done=False)  # still generating
    pair.run(1.0)
    for _ in range(8):
        pair.call.phone_audio(loud_caller_frame(), pair.now)
        pair.run(0.02)
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
    assert len(call._spoken) <= 32 and len(call._dropped) <= 32 and len(call._stale) <= 32
    assert len(call._response_items) <= 1
