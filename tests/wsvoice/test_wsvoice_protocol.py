"""The raw PCM protocol, pure: options, frames, the audio budget, the events; settings."""

import json

import pytest

from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.softphone.protocol import Refused
from bridge.wsvoice import protocol


def test_options() -> None:
    settings = Settings()
    assert protocol.parse_options("", settings).rate == 16000
    params = protocol.parse_options("rate=48000&token=t&agentId=default", settings)
    assert (params.rate, params.token, params.agent.name) == (48000, "t", "default")
    for bad in ("rate=44100", "rate=abc", "rate=" + "9" * 5000, "agentId=nobody"):
        with pytest.raises(Refused):
            protocol.parse_options(bad, settings)


def test_frames() -> None:
    assert protocol.parse_frame({"bytes": b"\x00\x01"}, 64).pcm == b"\x00\x01"
    bad: list[tuple[dict[str, object], str]] = [
        ({"text": "hi"}, "binary"),
        ({"bytes": b"\x00"}, "2-byte"),
        ({"bytes": b""}, "2-byte"),
        ({"bytes": bytes(66)}, "over 64"),
    ]
    for message, why in bad:
        with pytest.raises(PhoneProtocolError, match=why):
            protocol.parse_frame(message, 64)


def test_audio_budget_allows_real_time_and_refuses_a_flood() -> None:
    budget = protocol.AudioBudget(16000, now=0.0)
    frame = 640  # 20 ms
    assert all(budget.take(frame, k * 0.02) for k in range(5000))  # 100 s at real time
    flood = [budget.take(frame, 100.0) for _ in range(1000)]  # all at once
    assert flood.count(True) < 200 and not flood[-1]


def test_events() -> None:
    assert json.loads(protocol.event("AIConnected", sessionId="x")) == {
        "type": "event",
        "name": "AIConnected",
        "sessionId": "x",
    }
    assert json.loads(protocol.text_delta("hé")) == {"type": "textDelta", "text": "hé"}
    assert json.loads(protocol.error("no")) == {"type": "error", "message": "no"}


def test_settings() -> None:
    default = Settings.from_env({}, env_file=None)
    assert default.ws_voice_at_root and default.openai_base_url == "https://api.openai.com/v1"
    custom = Settings.from_env(
        {"WS_VOICE_AT_ROOT": "0", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"}, env_file=None
    )
    assert not custom.ws_voice_at_root and custom.openai_base_url == "http://127.0.0.1:9/v1"
