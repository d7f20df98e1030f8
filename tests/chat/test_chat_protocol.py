"""The ``/chat/v1`` event API (``bridge.chat.protocol``), pure, and the rate matching."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from bridge import inputs
from bridge.agents import Agent
from bridge.chat.leg import RateMatch
from bridge.chat.protocol import (
    AudioIn,
    ClearIn,
    TextIn,
    audio_out,
    error_out,
    leg_input,
    parse_client_event,
    parse_connect,
    text_out,
)
from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.softphone.protocol import Refused

MAX = 4000
SETTINGS = Settings(agents=(Agent(name="support"), Agent(name="sales")), default_agent="support")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse(event: str, data: object) -> object:
    return parse_client_event(event, data, max_bytes=MAX)


def code_of(event: str, data: object) -> str:
    with pytest.raises(PhoneProtocolError) as info:
        parse(event, data)
    return error_out(info.value)["code"]


def test_connect_picks_the_agent_and_rate() -> None:
    assert parse_connect({}, SETTINGS).agent_name == "support"
    params = parse_connect({"agentId": "sales", "sample_rate": "8000"}, SETTINGS)
    assert (params.agent_name, params.sample_rate, params.resume) == ("sales", 8000, None)
    assert parse_connect({"resume": "a" * 16}, SETTINGS).resume == "a" * 16
    assert parse_connect({}, SETTINGS).sample_rate == 16000


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"agentId": "nobody"}, "unknown_agent"),
        ({"sample_rate": "44100"}, "bad_sample_rate"),
        ({"sample_rate": "²"}, "bad_sample_rate"),
        ({"resume": "short"}, "bad_resume"),
        ({"resume": "x" * 65}, "bad_resume"),
        ({"resume": "bad id with spaces!!"}, "bad_resume"),
    ],
)
def test_connect_refusals_carry_a_code(fields: dict[str, str], code: str) -> None:
    with pytest.raises(Refused) as info:
        parse_connect(fields, SETTINGS)
    assert info.value.code == code and info.value.message


def test_audio_in_every_accepted_shape() -> None:
    pcm = b"\x01\x00" * 160
    assert parse("audio", {"data": b64(pcm)}) == AudioIn(pcm, 16000, None)
    assert parse("audio", {"data": pcm, "meta_info": {"sample_rate": 8000}}) == AudioIn(
        pcm, 8000, None
    )
    assert parse("audio", pcm) == AudioIn(pcm, 16000, None)
    meta = {"sample_rate": "48000", "stream_sid": "s-1"}
    assert parse("audio", {"data": b64(pcm), "meta_info": meta}) == AudioIn(pcm, 48000, "s-1")
    assert parse("audio", {"data": b64(pcm), "meta_info": None}) == AudioIn(pcm, 16000, None)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("text", "bad_message"),
        (None, "bad_message"),
        ([1, 2], "bad_message"),
        ({"data": 5}, "bad_message"),
        ({"data": b64(b"\x00" * 4), "meta_info": "x"}, "bad_message"),
        ({"data": b64(b"\x00" * 4), "meta_info": {"sample_rate": 44100}}, "bad_sample_rate"),
        ({"data": b64(b"\x00" * 4), "meta_info": {"sample_rate": True}}, "bad_sample_rate"),
        ({"data": b64(b"\x00" * 4), "meta_info": {"stream_sid": "x" * 200}}, "bad_message"),
        ({"data": b64(b"\x00" * 3)}, "bad_audio"),
        ({"data": ""}, "bad_audio"),
        ({"data": "%%%%"}, "bad_audio"),
        ({"data": b64(b"\x00" * (MAX + 2))}, "too_large"),
        ({"data": b"\x00" * (MAX + 2)}, "too_large"),
    ],
)
def test_bad_audio_is_refused_with_a_code(data: object, code: str) -> None:
    assert code_of("audio", data) == code


def test_text_clear_and_unknown_events() -> None:
    assert parse("text", {"data": " hi "}) == TextIn("hi")
    assert parse("text", "hello") == TextIn("hello")
    assert code_of("text", {"data": "  "}) == "bad_message"
    assert code_of("text", {"data": "x" * 5000}) == "too_large"
    assert parse("clear", None) == ClearIn()
    assert code_of("mark", {"name": "1:a"}) == "unknown_event"
    assert leg_input(TextIn("hi")) == inputs.TextInput("hi")
    assert leg_input(ClearIn()) == inputs.Interrupt()


def test_server_events() -> None:
    out = audio_out(b"\x01\x02", 8000, "s-1", "item_1")
    assert out == {
        "data": b64(b"\x01\x02"),
        "meta_info": {"sample_rate": 8000, "stream_sid": "s-1", "item_id": "item_1"},
    }
    assert text_out("hello", "assistant", final=True) == {
        "data": "hello",
        "role": "assistant",
        "final": True,
    }
    assert error_out("oops", "agent_error") == {"message": "oops", "code": "agent_error"}


def test_rate_match_resamples_both_ways_and_keeps_the_tone() -> None:
    match = RateMatch(16000)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype("<i2")
    assert match.uplink(b"\x01\x00", 16000) == b"\x01\x00"  # same rate: untouched
    up = b"".join(match.uplink(tone[i : i + 160].tobytes(), 8000) for i in range(0, 8000, 160))
    assert match.client_rate == 8000
    assert abs(len(up) // 2 - 16000) <= 64  # a second at 16 kHz, less the filter's delay
    down = np.frombuffer(match.downlink(up), "<i2")
    assert abs(down.size - 8000) <= 64
    # The tone survives the round trip: compare past the filter's start-up.
    spectrum = np.abs(np.fft.rfft(down[1000:7000]))
    assert abs(int(np.argmax(spectrum)) * 8000 / 6000 - 440) < 3
