"""The companion protocol, pure: parsing, the trait and voice mappings, gain, limits."""

import base64
import json

import numpy as np
import pytest

from bridge.agents import Agent
from bridge.companion import protocol as wire
from bridge.companion.sessions import AudioPace, RateWindow


def parse(kind: str, data: object) -> wire.ClientMessage:
    raw = json.dumps({"type": kind, "data": data})
    return wire.parse_message(raw, max_bytes=64 * 1024, default_voice="marin")


def test_messages_parse_into_typed_values():
    assert parse("auth", {"userId": "u", "conversationId": 7}) == wire.Auth("u", "7")
    pcm = b"\x01\x00\x02\x00"
    assert parse("audio", {"audio": base64.b64encode(pcm).decode()}) == wire.AudioIn(pcm)
    assert parse("text", {"text": " hi "}) == wire.TextIn("hi")
    start = parse("start_realtime", {})
    assert isinstance(start, wire.StartRealtime)
    assert start.traits == dict.fromkeys(wire.TRAITS, 50)
    assert start.voice == wire.VoiceSettings("marin", 1.0, 1.0)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("[", "not valid JSON"),
        ("[]", '"type"'),
        ('{"type": "x", "data": 1}', "object"),
        ('{"type": "auth", "data": {"userId": "u"}}', "conversationId"),
        ('{"type": "audio", "data": {"audio": 5}}', "base64"),
        ('{"type": "text", "data": {"text": ""}}', "not empty"),
        ('{"type": "start_realtime", "data": {"personalityTraits": {"humor": true}}}', "0 to 100"),
        ('{"type": "start_realtime", "data": {"voiceSettings": {"speed": "fast"}}}', "number"),
        ("x" * 200_000, "too large"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(raw, why):
    with pytest.raises(wire.CompanionError, match=why):
        wire.parse_message(raw, max_bytes=64 * 1024, default_voice="marin")


def test_traits_shape_the_instructions_and_voice_settings_the_agent():
    traits = {
        "playfulness": 0,
        "empathy": 100,
        "humor": 50,
        "intelligence": 70,
        "supportiveness": 33,
    }
    text = wire.personality(traits)
    assert "calm, serious" in text and "empathetic" in text and "precise" in text
    assert "humour" not in text and "over-praise" in text
    start = wire.StartRealtime(traits, wire.parse_voice_settings({"voice": "Nova"}, "marin"))
    agent = wire.companion_agent(Agent(instructions="Base."), start)
    assert agent.instructions.startswith("Base.\n\n") and agent.voice == "coral"
    assert agent.greeting == "" and agent.speed == 1.0


def test_speed_is_clamped_to_the_models_range_and_pitch_refused():
    fast = wire.parse_voice_settings({"speed": 4}, "marin")
    slow = wire.parse_voice_settings({"speed": 0.1}, "marin")
    assert (fast.speed, slow.speed) == (1.5, 0.25) and fast.warnings and slow.warnings
    assert wire.parse_voice_settings({"pitch": 1}, "marin").warnings == ()
    with pytest.raises(wire.CompanionError, match="pitch"):
        wire.parse_voice_settings({"pitch": 0.8}, "marin")


def test_gain_scales_and_clips():
    pcm = np.array([1000, -1000, 30000], "<i2").tobytes()
    assert wire.apply_gain(pcm, 1.0) is pcm
    out = np.frombuffer(wire.apply_gain(pcm, 2.0), "<i2")
    assert out.tolist() == [2000, -2000, 32767]


def test_rate_window_and_audio_pace():
    window = RateWindow(2)
    assert window.allow(0) and window.allow(1) and not window.allow(2)
    assert window.over == 1 and window.allow(60.5)
    pace = AudioPace(burst_ms=100)
    assert pace.allow(48 * 100, 0.0)  # the burst
    assert not pace.allow(48 * 20, 0.0)
    assert pace.allow(48 * 20, 0.02)  # real time
