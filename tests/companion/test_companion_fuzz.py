"""Fuzzing the companion JSON protocol (``bridge.companion.protocol``) with Hypothesis.

``parse_message`` gets any text frame (JSON of any shape, near-valid messages, text that
is barely JSON or not at all) and returns a typed message that means what the frame
says, or raises ``CompanionError`` with a message for the client. Nothing else escapes.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from bridge.agents import VOICES
from bridge.companion.protocol import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    SPEED_MAX,
    SPEED_MIN,
    TRAITS,
    VOICE_ALIASES,
    VOLUME_MAX,
    AudioIn,
    Auth,
    ClientMessage,
    CompanionError,
    StartRealtime,
    TextIn,
    VoiceSettings,
    parse_message,
)
from tests.phone.test_phone_fuzz import (
    JSON_VALUES,
    PATHOLOGICAL_TEXT,
    SWEEP_EXAMPLES,
    WILD_TEXT,
    every_field_broken,
    mutated,
    to_json,
    wire,
)

MAX_BYTES = 4096
TYPES = ("auth", "start_realtime", "audio", "text")


def parse_checked(raw: str) -> ClientMessage | None:
    """``parse_message`` checked against the module's docstring (None: refused)."""
    try:
        message = parse_message(raw, max_bytes=MAX_BYTES, default_voice="alloy")
    except CompanionError as exc:
        event("refused")
        assert str(exc)
        return None
    source = json.loads(raw)
    data = source.get("data", {})
    event(f"accepted {source['type']}")
    match message:
        case Auth(user_id=user, conversation_id=conversation):
            assert source["type"] == "auth"
            for got, key in ((user, "userId"), (conversation, "conversationId")):
                assert got == str(data[key]).strip() and 0 < len(got) <= MAX_ID_CHARS
        case StartRealtime(traits=traits, voice=voice):
            assert source["type"] == "start_realtime"
            given_traits = data.get("personalityTraits", {})
            assert set(traits) == set(TRAITS)
            for name, level in traits.items():
                assert 0 <= level <= 100 and level == round(given_traits.get(name, 50))
            given_voice = data.get("voiceSettings", {})
            name = (given_voice.get("voice") or "alloy").lower()
            assert voice.voice == VOICE_ALIASES.get(name, name) and voice.voice in VOICES
            assert SPEED_MIN <= voice.speed <= SPEED_MAX and 0 <= voice.volume <= VOLUME_MAX
            assert math.isfinite(voice.speed) and math.isfinite(voice.volume)
        case AudioIn(pcm=pcm):
            assert source["type"] == "audio"
            assert pcm == base64.b64decode(data["audio"], validate=True)
            assert pcm and len(pcm) % 2 == 0
        case TextIn(text=text):
            assert source["type"] == "text"
            assert text == data["text"].strip() and 0 < len(text) <= MAX_TEXT_CHARS
    return message


def full_messages() -> dict[str, dict[str, Any]]:
    return {
        "auth": {"type": "auth", "data": {"userId": "u1", "conversationId": "c1"}},
        "start_realtime": {
            "type": "start_realtime",
            "data": {
                "personalityTraits": dict.fromkeys(TRAITS, 70),
                "voiceSettings": {"voice": "nova", "speed": 1.2, "pitch": 1.0, "volume": 0.8},
            },
        },
        "audio": {"type": "audio", "data": {"audio": base64.b64encode(b"\x01\x00" * 8).decode()}},
        "text": {"type": "text", "data": {"text": "hello"}},
    }


@given(
    raw=st.one_of(
        JSON_VALUES.map(to_json),
        st.fixed_dictionaries(
            {"type": st.sampled_from(TYPES) | WILD_TEXT}, optional={"data": JSON_VALUES}
        ).map(to_json),
        PATHOLOGICAL_TEXT,
        st.text(max_size=40),
    )
)
@example(raw='{"type":"start_realtime","data":{"voiceSettings":{"speed":1' + "0" * 400 + "}}}")
@example(raw='{"type":"start_realtime","data":{"personalityTraits":{"humor":1' + "0" * 400 + "}}}")
@example(raw='{"type":"start_realtime","data":{"voiceSettings":{"volume":1e400}}}')
@example(raw='{"type":"audio","data":{"audio":"' + "A" * 6000 + '"}}')
def test_any_frame_gives_a_message_or_a_companion_error(raw):
    parse_checked(raw)


@pytest.mark.parametrize("kind", TYPES)
@given(data=st.data())
def test_near_valid_messages_give_a_message_or_a_companion_error(kind, data):
    broken = data.draw(mutated(full_messages()[kind]))
    parse_checked(data.draw(wire(broken)))


@pytest.mark.parametrize("kind", TYPES)
@settings(max_examples=SWEEP_EXAMPLES)
@given(data=st.data())
def test_every_field_broken_every_way_gives_a_message_or_a_companion_error(kind, data):
    for broken in every_field_broken(data, full_messages()[kind]):
        parse_checked(to_json(broken))


@given(
    traits=st.fixed_dictionaries({}, optional={t: st.integers(0, 100) for t in TRAITS}),
    voice=st.sampled_from(sorted(VOICES | VOICE_ALIASES.keys())),
    speed=st.floats(0, 4),
    volume=st.floats(0, VOLUME_MAX),
    data=st.data(),
)
def test_valid_messages_mean_what_they_say(traits, voice, speed, volume, data):
    start = {
        "type": "start_realtime",
        "data": {
            "personalityTraits": traits,
            "voiceSettings": {"voice": voice.upper(), "speed": speed, "volume": volume},
        },
    }
    got = parse_checked(data.draw(wire(start)))
    assert isinstance(got, StartRealtime)
    assert got.traits == {t: traits.get(t, 50) for t in TRAITS}
    clamped = min(max(speed, SPEED_MIN), SPEED_MAX)
    assert got.voice == VoiceSettings(
        VOICE_ALIASES.get(voice, voice), clamped, volume, got.voice.warnings
    )
    assert bool(got.voice.warnings) == (clamped != speed or voice in VOICE_ALIASES)
    pcm = data.draw(st.binary(min_size=1, max_size=MAX_BYTES // 2)) * 2
    audio = {"type": "audio", "data": {"audio": base64.b64encode(pcm).decode()}}
    assert parse_checked(data.draw(wire(audio))) == AudioIn(pcm)
    text = data.draw(st.text(min_size=1, max_size=300).filter(str.strip))
    assert parse_checked(json.dumps({"type": "text", "data": {"text": text}})) == TextIn(
        text.strip()
    )
    ident = data.draw(st.integers(0, 10**12) | st.text("abc-_019", min_size=1, max_size=40))
    auth = {"type": "auth", "data": {"userId": ident, "conversationId": "c"}}
    assert parse_checked(json.dumps(auth)) == Auth(str(ident), "c")
