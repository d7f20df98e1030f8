"""Fuzzing the raw PCM voice protocol (``bridge.wsvoice.protocol``) with Hypothesis.

``parse_frame`` gets any ASGI ``websocket.receive`` message (binary of any length, text
of any kind) and returns the frame's audio or raises ``PhoneProtocolError``;
``parse_options`` gets any query string and returns the agent, rate and token or raises
``Refused`` with a documented code; ``AudioBudget`` never lets through more than its
rate allows. Nothing else escapes.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

from hypothesis import event, example, given
from hypothesis import strategies as st

from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.softphone.protocol import Refused
from bridge.wsvoice.protocol import (
    BURST_S,
    DEFAULT_RATE,
    MAX_SPEEDUP,
    RATES,
    AudioBudget,
    AudioIn,
    Params,
    parse_frame,
    parse_options,
)
from tests.phone.test_phone_fuzz import LOOKALIKE_DIGITS, PATHOLOGICAL_TEXT, WILD_TEXT

MAX_BYTES = 4096
CONNECT_CODES = {"bad_rate", "unknown_agent"}
SETTINGS = Settings(agents=(Agent(name="front"), Agent(name="support")), default_agent="front")


def frame_checked(message: dict[str, object]) -> AudioIn | None:
    try:
        audio = parse_frame(message, MAX_BYTES)
    except PhoneProtocolError as exc:
        event("refused")
        assert str(exc) and not exc.fatal
        data = message.get("bytes")
        whole = isinstance(data, bytes) and 0 < len(data) <= MAX_BYTES and len(data) % 2 == 0
        assert not whole, "whole samples within the cap are audio"
        return None
    data = message.get("bytes")
    assert isinstance(data, bytes) and audio == AudioIn(data)
    assert 0 < len(audio.pcm) <= MAX_BYTES and len(audio.pcm) % 2 == 0
    return audio


def options_checked(query: str) -> Params | None:
    try:
        params = parse_options(query, SETTINGS)
    except Refused as exc:
        event(f"refused: {exc.code}")
        assert exc.code in CONNECT_CODES and exc.message
        return None
    assert params.rate in RATES
    assert params.agent in SETTINGS.agents
    fields = parse_qs(query)
    assert params.token == fields.get("token", [""])[0]
    return params


@given(
    message=st.fixed_dictionaries(
        {"type": st.just("websocket.receive")},
        optional={
            "bytes": st.binary(max_size=MAX_BYTES + 8) | st.none(),
            "text": st.text(max_size=50) | PATHOLOGICAL_TEXT | st.none(),
        },
    )
)
@example(message={"type": "websocket.receive", "bytes": b""})
@example(message={"type": "websocket.receive", "bytes": b"\x00" * (MAX_BYTES + 2)})
@example(message={"type": "websocket.receive", "text": "\x00\x01", "bytes": None})
def test_any_frame_gives_audio_or_a_protocol_error(message):
    frame_checked(message)


@given(pcm=st.binary(min_size=1, max_size=MAX_BYTES // 2).map(lambda b: b + b))
def test_whole_samples_round_trip(pcm):
    assert frame_checked({"type": "websocket.receive", "bytes": pcm}) == AudioIn(pcm)


QUERY_VALUES = st.one_of(
    WILD_TEXT,
    LOOKALIKE_DIGITS,
    st.sampled_from(RATES).map(str),
    st.sampled_from(("front", "support", "", "9" * 5000)),
)


@given(
    query=st.lists(
        st.tuples(st.sampled_from(("rate", "agentId", "token")) | WILD_TEXT, QUERY_VALUES),
        max_size=5,
    ).map(lambda pairs: urlencode(pairs, errors="surrogatepass"))
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))  # what the route passes
    | st.text(st.sampled_from("=&%;+ra9te"), max_size=30)
)
@example(query="rate=\u00b2")
@example(query="rate=" + "9" * 5000)
@example(query="rate=%FF%FE&agentId=%C0")
def test_any_query_gives_options_or_a_documented_refusal(query):
    options_checked(query)


@given(
    rate=st.sampled_from(RATES) | st.none(),
    agent=st.sampled_from(("front", "support")) | st.none(),
    token=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t) | st.none(),
)
def test_valid_options_round_trip(rate, agent, token):
    fields = {"rate": rate, "agentId": agent, "token": token}
    query = urlencode({k: v for k, v in fields.items() if v is not None})
    got = options_checked(query)
    assert got is not None
    assert got.rate == (rate or DEFAULT_RATE)
    assert got.agent.name == (agent or "front")
    assert got.token == (token or "")


@given(
    rate=st.sampled_from(RATES),
    steps=st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.integers(0, 400_000)), max_size=30
    ),
)
def test_the_audio_budget_never_passes_more_than_it_allows(rate, steps):
    budget = AudioBudget(rate, now=0.0)
    now, passed = 0.0, 0
    for dt, n in steps:
        now += dt
        if budget.take(n, now):
            passed += n
        assert passed <= rate * 2 * (BURST_S + MAX_SPEEDUP * now) + 1e-6
