"""The softphone event API, sans-I/O: connect parameters, client events, origins."""

import base64

import pytest

from bridge import inputs
from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.playout import item_of_mark
from bridge.softphone.protocol import (
    AudioIn,
    ClearIn,
    HangupIn,
    MarkIn,
    Refused,
    TextIn,
    allowed_origin,
    audio_out,
    error_payload,
    leg_input,
    parse_client_event,
    parse_connect,
)

SETTINGS = Settings(agents=(Agent(name="front"), Agent(name="support")), default_agent="front")


def refused(auth, query="", settings=SETTINGS):
    with pytest.raises(Refused) as info:
        parse_connect(auth, query, settings)
    assert info.value.message
    return info.value.code


def test_connect_defaults_and_choices():
    params = parse_connect(None, "", SETTINGS)
    assert (params.agent.name, params.sample_rate) == ("front", 24000)
    params = parse_connect({"agentId": "support", "sample_rate": 16000}, "", SETTINGS)
    assert (params.agent.name, params.sample_rate) == ("support", 16000)
    params = parse_connect(None, "agentId=support&sample_rate=48000", SETTINGS)
    assert (params.agent.name, params.sample_rate) == ("support", 48000)
    # auth wins over the query string
    params = parse_connect({"agentId": "front"}, "agentId=support", SETTINGS)
    assert params.agent.name == "front"


def test_connect_refusals():
    assert refused({"agentId": "nobody"}) == "unknown_agent"
    assert refused({"sample_rate": 44100}) == "bad_sample_rate"
    assert refused({"sample_rate": "fast"}) == "bad_sample_rate"
    assert refused(None, "sample_rate=8000") == "bad_sample_rate"


def test_with_a_real_api_key_the_softphone_needs_a_token():
    keyed = SETTINGS.with_(openai_api_key="sk-test")
    assert refused(None, settings=keyed) == "disabled"
    params = parse_connect({"token": "t"}, "", keyed.with_(softphone_token="t"))
    assert params.agent.name == "front"
    # Keyless (the local agent): open for local development.
    assert parse_connect(None, "", SETTINGS).agent.name == "front"


def test_token():
    settings = SETTINGS.with_(softphone_token="s3cret")
    assert refused(None, settings=settings) == "unauthorized"
    assert refused({"token": "S3CRET"}, settings=settings) == "unauthorized"
    assert refused({"token": 12345}, settings=settings) == "unauthorized"
    assert parse_connect({"token": "s3cret"}, "", settings).agent.name == "front"
    assert parse_connect(None, "token=s3cret", settings).agent.name == "front"
    # the token is checked before anything else is revealed
    assert refused({"agentId": "nobody"}, settings=settings) == "unauthorized"


def test_origins():
    same = ["http://127.0.0.1:8080"]
    assert allowed_origin(None, configured=(), same_origin=same)
    assert allowed_origin("http://127.0.0.1:8080", configured=(), same_origin=same)
    assert allowed_origin("HTTP://127.0.0.1:8080/", configured=(), same_origin=same)
    assert not allowed_origin("http://127.0.0.1:9999", configured=(), same_origin=same)
    assert not allowed_origin("null", configured=(), same_origin=same)
    listed = ("https://app.example",)
    assert allowed_origin("https://app.example", configured=listed, same_origin=same)
    assert allowed_origin("http://127.0.0.1:8080", configured=listed, same_origin=same)
    assert not allowed_origin("https://evil.example", configured=listed, same_origin=same)
    assert allowed_origin("https://any.example", configured=("*",), same_origin=same)


def parse(event, data, rate=16000, max_bytes=1024):
    return parse_client_event(event, data, sample_rate=rate, max_bytes=max_bytes)


def code(event, data, **kw):
    with pytest.raises(PhoneProtocolError) as info:
        parse(event, data, **kw)
    assert not info.value.fatal
    return error_payload(info.value)["code"]


def test_audio():
    pcm = bytes(range(64))
    b64 = base64.b64encode(pcm).decode()
    assert parse("audio", {"data": b64, "meta_info": {"sample_rate": 16000}}) == AudioIn(pcm)
    assert parse(
        "audio", {"data": b64, "meta_info": {"sample_rate": "16000", "stream_sid": "x"}}
    ) == AudioIn(pcm)
    assert parse("audio", {"data": pcm}) == AudioIn(pcm)  # binary attachment, no meta
    assert parse("audio", pcm) == AudioIn(pcm)  # the bare attachment


def test_bad_audio():
    b64 = base64.b64encode(bytes(64)).decode()
    assert code("audio", {"data": b64, "meta_info": {"sample_rate": 24000}}) == (
        "sample_rate_mismatch"
    )
    assert code("audio", {"data": "@@@@"}) == "bad_audio"
    assert code("audio", {"data": base64.b64encode(b"abc").decode()}) == "bad_audio"
    assert code("audio", {"data": ""}) == "bad_audio"
    assert code("audio", {"data": 5}) == "bad_message"
    assert code("audio", {"data": b64, "meta_info": "x"}) == "bad_message"
    assert code("audio", ["x"]) == "bad_message"
    assert code("audio", {"data": bytes(2048)}) == "too_large"
    assert code("audio", {"data": base64.b64encode(bytes(2048)).decode()}) == "too_large"
    assert code("audio", {"data": "A" * 1_000_000}) == "too_large"  # not decoded at all


def test_other_events():
    assert parse("text", {"data": "  hello "}) == TextIn("hello")
    assert parse("mark", {"name": "3:item_1"}) == MarkIn("3:item_1")
    assert parse("clear", None) == ClearIn()
    assert parse("hangup", {}) == HangupIn()
    assert code("text", {"data": ""}) == "bad_message"
    assert code("text", {"data": 3}) == "bad_message"
    assert code("text", {"data": "x" * 5000}) == "too_large"
    assert code("mark", {}) == "bad_message"
    assert code("mark", {"name": "x" * 500}) == "bad_message"
    assert code("dance", {}) == "unknown_event"


def test_server_payloads():
    out = audio_out(b"\x01\x00", 24000, "item_1")
    assert out == {"data": "AQA=", "meta_info": {"sample_rate": 24000, "item_id": "item_1"}}
    assert item_of_mark("12:item_abc") == "item_abc"
    assert item_of_mark("nonsense") is None
    assert error_payload(PhoneProtocolError("plain words")) == {
        "code": "bad_message",
        "message": "plain words",
    }


def test_client_events_become_the_calls_typed_inputs():
    assert leg_input(AudioIn(b"\x01\x00")) == inputs.CallerAudio(b"\x01\x00")
    assert leg_input(MarkIn("1:a")) == inputs.FarEndMark("1:a")
    assert leg_input(TextIn("hi")) == inputs.TextInput("hi")
    assert leg_input(ClearIn()) == inputs.Interrupt()
    assert leg_input(HangupIn()) == inputs.HangUp("hung up")
