"""Fuzzing the ``/chat/v1`` parsers (``bridge.chat.protocol``) with Hypothesis.

``parse_client_event`` gets what python-socketio hands over (any JSON value, with binary
attachments anywhere) and returns a typed event that means what the message says, or
raises ``PhoneProtocolError`` whose "code: message" has a documented code;
``parse_connect`` gets any ``auth`` object and query string and returns the agent, rate
and resume id or raises ``Refused`` with a documented code. Nothing else escapes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from bridge.agents import Agent
from bridge.chat.protocol import (
    DEFAULT_RATE,
    MAX_STREAM_SID_CHARS,
    RATES,
    AudioIn,
    ChatConnect,
    ClearIn,
    ClientEvent,
    TextIn,
    error_out,
    parse_client_event,
    parse_connect,
)
from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.softphone.protocol import MAX_TEXT_CHARS, Refused, connect_fields
from tests.phone.test_phone_fuzz import (
    HUGE,
    LOOKALIKE_DIGITS,
    SWEEP_EXAMPLES,
    WILD_TEXT,
    every_field_broken,
    mutated,
)
from tests.softphone.test_softphone_fuzz import RATE_VALUES, SIO_VALUES

EVENTS = ("audio", "text", "clear")
CODES = {"bad_message", "too_large", "bad_audio", "bad_sample_rate", "unknown_event"}
CONNECT_CODES = {"unknown_agent", "bad_sample_rate", "bad_resume"}
MAX_BYTES = 4096
SETTINGS = Settings(agents=(Agent(name="front"), Agent(name="support")), default_agent="front")


def parse_checked(name: str, data: object, max_bytes: int = MAX_BYTES) -> ClientEvent | None:
    """``parse_client_event`` checked against the module's docstring (None: refused)."""
    try:
        message = parse_client_event(name, data, max_bytes=max_bytes)
    except PhoneProtocolError as exc:
        error = error_out(exc)
        event(f"{name if name in EVENTS else 'other'}: {error['code']}")
        assert error["code"] in CODES, exc
        assert error["message"]
        assert (error["code"] == "unknown_event") == (name not in EVENTS)
        assert name != "clear", "clear takes any payload"
        return None
    event(f"accepted {type(message).__name__}")
    match message:
        case AudioIn(pcm=pcm, rate=rate, stream_sid=sid):
            assert name == "audio"
            assert type(pcm) is bytes and 0 < len(pcm) <= max_bytes and len(pcm) % 2 == 0
            if isinstance(data, bytes | bytearray):
                payload: object = bytes(data)
                meta: object = {}
            else:
                assert isinstance(data, Mapping)
                payload, meta = data.get("data"), data.get("meta_info") or {}
            if isinstance(payload, str):
                assert pcm == base64.b64decode(payload, validate=True)
            else:
                assert pcm == payload
            assert isinstance(meta, Mapping) and rate in RATES
            given_rate = meta.get("sample_rate")
            assert rate == (DEFAULT_RATE if given_rate in (None, "") else int(str(given_rate)))
            assert sid == (None if meta.get("stream_sid") is None else str(meta["stream_sid"]))
            assert sid is None or len(sid) <= MAX_STREAM_SID_CHARS
        case TextIn(text=text):
            assert name == "text"
            source = data.get("data") if isinstance(data, Mapping) else data
            assert isinstance(source, str) and len(source) <= MAX_TEXT_CHARS
            assert text == source.strip() and text
        case ClearIn():
            assert name == "clear"
    return message


def connect_checked(auth: object, query: str) -> ChatConnect | None:
    fields = connect_fields(auth, query)
    try:
        params = parse_connect(fields, SETTINGS)
    except Refused as exc:
        event(f"refused: {exc.code}")
        assert exc.code in CONNECT_CODES and exc.message
        return None
    assert SETTINGS.agent(params.agent_name) is not None
    assert params.agent_name == (fields.get("agentId") or SETTINGS.default_agent)
    assert params.sample_rate in RATES
    assert params.resume == (fields.get("resume") or None)
    return params


def audio_messages(rate: int) -> st.SearchStrategy[dict[str, Any]]:
    pcm = st.binary(min_size=1, max_size=MAX_BYTES // 2).map(lambda b: b + b)
    return st.fixed_dictionaries(
        {
            "data": pcm.map(lambda b: base64.b64encode(b).decode()),
            "meta_info": st.just({"sample_rate": rate, "stream_sid": "MZ1"}),
        }
    )


@given(name=st.sampled_from(EVENTS) | WILD_TEXT, data=SIO_VALUES)
def test_any_client_event_gives_an_event_or_a_documented_error(name, data):
    parse_checked(name, data)


@given(
    meta=st.fixed_dictionaries({"sample_rate": RATE_VALUES}, optional={"stream_sid": SIO_VALUES})
    | st.dictionaries(WILD_TEXT, SIO_VALUES, max_size=3)
    | SIO_VALUES,
    payload=st.binary(max_size=MAX_BYTES + 4).map(lambda b: base64.b64encode(b).decode())
    | st.binary(max_size=MAX_BYTES + 4)
    | SIO_VALUES
    | HUGE,
)
@example(meta={"sample_rate": "\u00b2"}, payload="AAAA")
@example(meta={"stream_sid": "s" * (MAX_STREAM_SID_CHARS + 1)}, payload="AAAA")
def test_audio_with_any_meta_info_gives_audio_or_a_documented_error(meta, payload):
    parse_checked("audio", {"data": payload, "meta_info": meta})


@given(data=st.data(), rate=st.sampled_from(RATES))
def test_near_valid_audio_and_text_give_an_event_or_a_documented_error(data, rate):
    audio = data.draw(audio_messages(rate))
    parse_checked("audio", data.draw(mutated(audio)))
    parse_checked("text", data.draw(mutated({"data": "what time is it?"})))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("audio", {"data": "AQABAA==", "meta_info": {"sample_rate": 8000, "stream_sid": "MZ"}}),
        ("text", {"data": "hello"}),
    ],
)
@settings(max_examples=SWEEP_EXAMPLES)
@given(data=st.data())
def test_every_field_broken_every_way_gives_an_event_or_a_documented_error(name, message, data):
    for broken in every_field_broken(data, message):
        parse_checked(name, broken)


@given(data=st.data(), rate=st.sampled_from(RATES), as_text=st.booleans())
def test_valid_events_mean_what_they_say(data, rate, as_text):
    audio = data.draw(audio_messages(rate))
    if as_text:
        audio["meta_info"]["sample_rate"] = str(rate)
    got = parse_checked("audio", audio)
    assert got == AudioIn(base64.b64decode(audio["data"]), rate, "MZ1")
    raw = base64.b64decode(audio["data"])
    assert parse_checked("audio", raw) == AudioIn(raw, DEFAULT_RATE, None)
    text = data.draw(st.text(min_size=1, max_size=200).filter(str.strip))
    assert parse_checked("text", {"data": text}) == TextIn(text.strip())
    assert parse_checked("text", text) == TextIn(text.strip())
    assert parse_checked("clear", data.draw(SIO_VALUES)) == ClearIn()


CONNECT_VALUES = st.one_of(
    SIO_VALUES, st.sampled_from(RATES), LOOKALIKE_DIGITS, st.sampled_from(("front", "support"))
)


@given(
    auth=st.dictionaries(
        st.sampled_from(("agentId", "sample_rate", "resume", "token")) | WILD_TEXT,
        CONNECT_VALUES,
        max_size=4,
    )
    | SIO_VALUES,
    query=st.dictionaries(
        st.sampled_from(("agentId", "sample_rate", "resume")), WILD_TEXT, max_size=3
    ).map(lambda fields: urlencode(fields, errors="surrogatepass"))
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1")),  # as WSGI environs hold it
)
def test_any_connect_gives_a_session_or_a_documented_refusal(auth, query):
    connect_checked(auth, query)


@settings(max_examples=SWEEP_EXAMPLES)
@given(data=st.data())
def test_every_connect_field_broken_every_way_is_refused_or_checked(data):
    auth = {"agentId": "support", "sample_rate": 24000, "resume": "r" * 20}
    for broken in every_field_broken(data, auth):
        connect_checked(broken, "")


@given(
    agent=st.sampled_from(("front", "support")),
    rate=st.sampled_from(RATES),
    resume=st.text("abcXYZ019-_", min_size=16, max_size=64),
    in_auth=st.booleans(),
)
def test_valid_connects_round_trip(agent, rate, resume, in_auth):
    fields = {"agentId": agent, "sample_rate": str(rate), "resume": resume}
    got = connect_checked(fields, "") if in_auth else connect_checked(None, urlencode(fields))
    assert got == ChatConnect(agent, rate, resume)
