"""Fuzzing the ``/ws/realtime`` request parser (``bridge.wsrealtime.protocol``) with Hypothesis.

``parse_request`` gets any frame (text that is JSON of any shape or barely JSON, binary,
nothing) and returns a request that means what the frame says, or raises
``PhoneProtocolError`` with a message for the client; ``RequestBudget`` never grants more
than its rate. Nothing else escapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from bridge.errors import PhoneProtocolError
from bridge.wsrealtime.protocol import (
    BURST,
    MAX_MESSAGE_CHARS,
    MAX_TTS_CHARS,
    REQUESTS_PER_MINUTE,
    TTS_FORMATS,
    TTS_VOICES,
    Request,
    RequestBudget,
    SessionRequest,
    TtsRequest,
    parse_request,
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

TYPES = ("realtime_session_request", "tts_request")


def parse_checked(frame: str | bytes | None) -> Request | None:
    """``parse_request`` checked against the module's docstring (None: refused)."""
    try:
        request = parse_request(frame)
    except PhoneProtocolError as exc:
        event("refused")
        assert str(exc) and not exc.fatal
        return None
    assert isinstance(frame, str) and len(frame) <= MAX_MESSAGE_CHARS
    source = json.loads(frame)
    event(f"accepted {source['type']}")
    match request:
        case SessionRequest(session=session, expires_in=expires):
            assert source["type"] == "realtime_session_request"
            assert session == source.get("session") and 10 <= expires <= 7200
            assert expires == source.get("expiresIn", 600)
            json.dumps(session, allow_nan=False).encode()  # it goes on to OpenAI
        case TtsRequest(text=text, voice=voice, format=fmt):
            assert source["type"] == "tts_request"
            assert text == source["text"] and text.strip() and len(text) <= MAX_TTS_CHARS
            assert voice == source.get("voice") and (voice is None or voice in TTS_VOICES)
            assert fmt == source.get("format", "wav") and fmt in TTS_FORMATS
            text.encode()  # it goes on to OpenAI
    return request


FULL: dict[str, dict[str, Any]] = {
    "realtime_session_request": {
        "type": "realtime_session_request",
        "session": {"type": "realtime", "instructions": "be brief"},
        "expiresIn": 60,
    },
    "tts_request": {"type": "tts_request", "text": "hello", "voice": "nova", "format": "pcm"},
}


@given(
    frame=st.one_of(
        JSON_VALUES.map(to_json),
        st.fixed_dictionaries(
            {"type": st.sampled_from(TYPES) | WILD_TEXT},
            optional={k: JSON_VALUES for k in ("session", "expiresIn", "text", "voice", "format")},
        ).map(to_json),
        PATHOLOGICAL_TEXT,
        st.text(max_size=40),
        st.binary(max_size=40),
        st.none(),
    )
)
@example(frame='{"type":"tts_request","text":"hi","voice":["alloy"]}')
@example(frame='{"type":"tts_request","text":"hi","format":{"wav":1}}')
@example(frame="[" * 5000 + "]" * 5000)
@example(frame='{"type":"realtime_session_request","session":{"type":"\\ud800"}}')
@example(frame='{"type":"realtime_session_request","session":{"speed":NaN}}')
@example(frame='{"type":"tts_request","text":"hi \\udfff"}')
@example(frame='{"type":"realtime_session_request","session":' + "[" * 3000 + "]" * 3000 + "}")
@example(frame='{"type":"tts_request","text":"' + "x" * (MAX_TTS_CHARS + 1) + '"}')
def test_any_frame_gives_a_request_or_a_protocol_error(frame):
    parse_checked(frame)


@pytest.mark.parametrize("kind", TYPES)
@given(data=st.data())
def test_near_valid_requests_give_a_request_or_a_protocol_error(kind, data):
    parse_checked(data.draw(wire(data.draw(mutated(FULL[kind])))))


@pytest.mark.parametrize("kind", TYPES)
@settings(max_examples=SWEEP_EXAMPLES)
@given(data=st.data())
def test_every_field_broken_every_way_gives_a_request_or_a_protocol_error(kind, data):
    for broken in every_field_broken(data, FULL[kind]):
        parse_checked(to_json(broken))


def strict_json(value: object) -> bool:
    """JSON OpenAI takes: no NaN or infinities, no lone surrogates."""
    try:
        json.dumps(value, allow_nan=False).encode()
        json.dumps(value, ensure_ascii=False).encode()
    except ValueError:
        return False
    return True


@given(
    session=st.none() | st.dictionaries(WILD_TEXT, JSON_VALUES, max_size=4).filter(strict_json),
    expires=st.integers(10, 7200) | st.none(),
    text=st.text(min_size=1, max_size=300).filter(lambda t: t.strip() and strict_json(t)),
    voice=st.sampled_from(sorted(TTS_VOICES)) | st.none(),
    fmt=st.sampled_from(TTS_FORMATS) | st.none(),
    data=st.data(),
)
def test_valid_requests_mean_what_they_say(session, expires, text, voice, fmt, data):
    minted: dict[str, Any] = {"type": "realtime_session_request", "session": session}
    if expires is not None:
        minted["expiresIn"] = expires
    got = parse_checked(data.draw(wire(minted)))
    assert isinstance(got, SessionRequest) and got.expires_in == (expires or 600)
    assert json.dumps(got.session) == json.dumps(session)  # NaN != NaN
    tts: dict[str, Any] = {"type": "tts_request", "text": text, "voice": voice}
    if fmt is not None:
        tts["format"] = fmt
    assert parse_checked(data.draw(wire(tts))) == TtsRequest(text, voice, fmt or "wav")


@given(steps=st.lists(st.floats(0, 30, allow_nan=False), max_size=40))
def test_the_request_budget_never_grants_more_than_its_rate(steps):
    budget = RequestBudget(now=0.0)
    now, granted = 0.0, 0
    for dt in steps:
        now += dt
        granted += budget.take(now)
        assert granted <= BURST + now * REQUESTS_PER_MINUTE / 60 + 1e-9
