"""Fuzzing the raw Realtime proxy's client side with Hypothesis.

What a client sends as ``realtime-message`` goes through ``bridge.proxy.rules``
(``check_event_type``, ``restrict_session``, ``check_response``) and, for beta clients,
``bridge.proxy.translate`` (``client_to_ga``): the namespace's ``_admit_event`` ties them
together and is driven here as it is, with stand-ins for the link and the task spawner.
Any event (JSON of any shape, near-valid beta and GA events, deep nesting) gives a GA
event that carries only what the agent lets clients set, or a ``Refusal`` with a
documented code; valid beta sessions translate to what they mean (a GA event the
``openai`` models accept, and back to the same beta session).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import currently_in_test_context, example, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from openai.types.beta.realtime import RealtimeServerEvent as BetaRealtimeServerEvent
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from bridge.agents import Agent
from bridge.proxy.namespace import RealtimeProxy
from bridge.proxy.record import from_server
from bridge.proxy.rules import (
    CLIENT_EVENTS,
    RateCap,
    Refusal,
    check_event_type,
    restrict_session,
)
from bridge.proxy.translate import (
    BETA_DROPPED,
    SERVER_RENAMES,
    TranslationError,
    client_to_ga,
    server_to_beta,
    session_to_beta,
    session_to_ga,
)
from tests.phone.test_phone_fuzz import (
    JSON_VALUES,
    SWEEP_EXAMPLES,
    WILD_TEXT,
    Raw,
    every_field_broken,
    mutated,
)
from tests.softphone.test_softphone_fuzz import SIO_VALUES

GA_CLIENT: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
CODES = {
    "invalid_event",
    "event_not_allowed",
    "unknown_parameter",
    "invalid_type",
    "invalid_value",
    "field_not_allowed",
}
PERMISSIONS = ("voice", "turn_detection", "transcription", "modalities", "instructions", "tools")
MAY_SET = st.lists(st.sampled_from(PERMISSIONS), unique=True).map(tuple)


def nested(depth: int) -> Raw:
    """A list nested ``depth`` deep (python-socketio's json.loads takes up to ~990)."""
    return Raw("[" * depth + "]" * depth)


def event(value: str) -> None:
    if currently_in_test_context():
        hypothesis_event(value)


class Undeliverable(Exception):
    pass


def delivered(value: object) -> object:
    """What python-socketio would hand over for ``value``: :class:`Raw` JSON decoded
    (``Undeliverable``: nested deeper than its decoder takes)."""
    if isinstance(value, Raw):
        try:
            return json.loads(value.text)
        except RecursionError:
            raise Undeliverable from None
    if isinstance(value, dict):
        return {k: delivered(v) for k, v in value.items()}
    if isinstance(value, list):
        return [delivered(v) for v in value]
    return value


def jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except TypeError:  # a binary attachment
        return False
    return True


def admit(
    data: object, protocol: str | None, may_set: tuple[str, ...], *, decoded: bool = False
) -> dict[str, Any] | None:
    """``RealtimeProxy._admit_event`` checked against the modules' docstrings (None: refused)."""
    try:
        data = data if decoded else delivered(data)
    except Undeliverable:
        return None
    emitted: list[tuple[str, dict[str, Any]]] = []
    proxy = SimpleNamespace(_spawn=lambda note: emitted.append(note))
    link = SimpleNamespace(emit=lambda name, payload: (name, payload))
    session = SimpleNamespace(
        protocol=protocol,
        agent=Agent(name="a", realtime_client_may_set=may_set),
        link=link,
        recorder=None,
    )
    try:
        out = RealtimeProxy._admit_event(cast(RealtimeProxy, proxy), cast(Any, session), data)
    except Refusal as exc:
        event(f"refused: {exc.code}")
        assert exc.code in CODES and exc.message
        payload = exc.payload(data.get("type") if isinstance(data, dict) else None)
        json.dumps(payload)
        return None
    assert isinstance(data, dict)
    kind = out["type"]
    event(f"accepted {kind}")
    assert kind in CLIENT_EVENTS and kind != "session.create"
    assert data["type"] == kind or (data["type"] == "session.create" and kind == "session.update")
    assert jsonable(out) or not jsonable(data)  # it goes on to the model as JSON
    if kind == "session.update":
        assert not restrict_session(out["session"], may_set)[1]
        assert "type" in out["session"]
    for name, payload in emitted:
        assert name == "realtime-error" and payload["code"] == "field_not_allowed"
    if kind == "response.create" and isinstance(out.get("response"), dict):
        for key, need in (("instructions", "instructions"), ("tools", "tools")):
            assert key not in out["response"] or need in may_set
    return out


# Fields beta and GA clients set, with values of any shape.
SESSION_KEYS = (
    "modalities",
    "instructions",
    "voice",
    "speed",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "turn_detection",
    "tools",
    "temperature",
    "type",
    "audio",
    "output_modalities",
)
ANY_SESSION = st.dictionaries(st.sampled_from(SESSION_KEYS) | WILD_TEXT, SIO_VALUES, max_size=5)
ANY_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(CLIENT_EVENTS)) | WILD_TEXT},
    optional={
        "session": ANY_SESSION | SIO_VALUES,
        "response": st.dictionaries(
            st.sampled_from(("instructions", "modalities", "input", "voice", "tools")) | WILD_TEXT,
            SIO_VALUES,
            max_size=4,
        )
        | SIO_VALUES,
        "item": SIO_VALUES,
        "audio": SIO_VALUES,
        "event_id": SIO_VALUES,
    },
)
PROTOCOLS = st.sampled_from((None, "beta", "ga"))


@given(data=ANY_EVENT | SIO_VALUES, protocol=PROTOCOLS, may_set=MAY_SET)
@example(data={"type": "response.create", "response": {"input": 5}}, protocol="beta", may_set=())
@example(data={"type": "response.create", "response": {"input": None}}, protocol=None, may_set=())
@example(
    data={"type": "session.update", "session": {"instructions": nested(600)}},
    protocol="beta",
    may_set=("instructions",),
)
@example(
    data={"type": "session.update", "session": {"type": "realtime", "tools": nested(600)}},
    protocol="ga",
    may_set=("tools",),
)
@example(
    data={"type": "conversation.item.create", "item": nested(600)}, protocol="beta", may_set=()
)
def test_any_client_event_gives_a_ga_event_or_a_documented_refusal(data, protocol, may_set):
    admit(data, protocol, may_set)


@pytest.mark.parametrize(
    ("protocol", "data"),
    [
        ("beta", {"type": "session.update", "session": {"instructions": nested(600)}}),
        ("beta", {"type": "response.create", "response": {"metadata": nested(600)}}),
        ("ga", {"type": "session.update", "session": {"tools": nested(600)}}),
    ],
)
def test_deep_nesting_that_socketio_delivers_is_refused(protocol, data):
    # Bugs found once: copy.deepcopy raised RecursionError out of the handler.
    assert admit(delivered(data), protocol, PERMISSIONS, decoded=True) is None


BETA_UPDATE: dict[str, Any] = {
    "type": "session.update",
    "session": {
        "modalities": ["text", "audio"],
        "instructions": "Be brief.",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5},
    },
}
GA_UPDATE: dict[str, Any] = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
            "output": {"voice": "marin", "speed": 1.1},
        },
    },
}
RESPONSE: dict[str, Any] = {
    "type": "response.create",
    "response": {
        "modalities": ["text"],
        "instructions": "Say hi.",
        "input": [{"type": "message", "role": "assistant", "content": [{"type": "text"}]}],
    },
}
ITEM: dict[str, Any] = {
    "type": "conversation.item.create",
    "item": {"type": "message", "role": "assistant", "content": [{"type": "audio"}]},
}
FULL = {"beta": BETA_UPDATE, "ga": GA_UPDATE, "response": RESPONSE, "item": ITEM}


@pytest.mark.parametrize("kind", sorted(FULL))
@given(data=st.data(), protocol=PROTOCOLS, may_set=MAY_SET)
def test_near_valid_events_give_a_ga_event_or_a_documented_refusal(kind, data, protocol, may_set):
    admit(data.draw(mutated(FULL[kind])), protocol, may_set)


@pytest.mark.parametrize("kind", sorted(FULL))
@settings(max_examples=SWEEP_EXAMPLES)
@given(data=st.data())
def test_every_field_broken_every_way_gives_a_ga_event_or_a_documented_refusal(kind, data):
    for broken in every_field_broken(data, FULL[kind]):
        admit(broken, None, PERMISSIONS)
        admit(broken, "ga", ())


@given(data=SIO_VALUES)
def test_any_value_has_an_allowed_type_or_is_refused(data):
    try:
        kind = check_event_type(data)
    except Refusal as exc:
        assert exc.code in {"invalid_event", "event_not_allowed"}
        return
    assert isinstance(data, dict) and kind == data["type"] in CLIENT_EVENTS


@given(event_=ANY_EVENT)
def test_translation_gives_an_event_or_a_translation_error(event_):
    try:
        out = client_to_ga(event_)
    except TranslationError as exc:
        assert exc.code in CODES and exc.message
        return
    assert isinstance(out, dict)


BETA_SESSIONS = st.fixed_dictionaries(
    {},
    optional={
        "modalities": st.sampled_from((["text"], ["text", "audio"])),
        "instructions": st.text(max_size=40),
        "voice": st.sampled_from(("alloy", "ash", "marin", "cedar")),
        "speed": st.floats(0.25, 1.5),
        "input_audio_format": st.sampled_from(("pcm16", "g711_ulaw", "g711_alaw")),
        "output_audio_format": st.sampled_from(("pcm16", "g711_ulaw", "g711_alaw")),
        "input_audio_transcription": st.sampled_from(
            ({"model": "whisper-1"}, {"model": "gpt-4o-transcribe", "language": "de"})
        ),
        "turn_detection": st.sampled_from(
            (None, {"type": "server_vad", "threshold": 0.4}, {"type": "semantic_vad"})
        ),
        "max_response_output_tokens": st.integers(1, 4096) | st.just("inf"),
    },
)


@given(beta=BETA_SESSIONS, create=st.booleans())
def test_valid_beta_sessions_translate_to_what_they_mean(beta, create):
    ga = client_to_ga({"type": "session.create" if create else "session.update", "session": beta})
    GA_CLIENT.validate_python(ga)  # what the model takes
    assert ga["type"] == "session.update" and ga["session"]["type"] == "realtime"
    assert session_to_beta(ga["session"]) == beta
    out = admit({"type": "session.update", "session": beta}, "beta", PERMISSIONS)
    assert out is not None and out["session"]["type"] == "realtime"
    # max_output_tokens is not a client's to set (bridge.proxy.rules).
    assert session_to_beta(out["session"]) == {
        k: v for k, v in beta.items() if k != "max_response_output_tokens"
    }


@given(beta=BETA_SESSIONS)
def test_ga_sessions_pass_a_ga_client_unchanged_when_all_is_allowed(beta):
    beta.pop("max_response_output_tokens", None)  # not a client's to set
    ga = {"type": "session.update", "session": session_to_ga(beta)}
    assert admit(ga, "ga", PERMISSIONS) == ga


@given(
    per_s=st.floats(0.5, 50),
    burst=st.integers(1, 20),
    steps=st.lists(st.floats(0, 2, allow_nan=False), max_size=50),
)
def test_the_rate_cap_never_allows_more_than_its_rate(per_s, burst, steps):
    cap = RateCap(per_s, burst)
    now, allowed = 0.0, 0
    for dt in steps:
        now += dt
        allowed += cap.allow(now)
        assert allowed <= burst + now * per_s + 1e-9


# ---------------------------------------------------------------------- model → client
# The model is a remote peer: whatever it sends, ``server_to_beta`` gives the beta event
# (or None for events beta never had) and never raises (its docstring); the namespace's
# record of it (``bridge.proxy.record.from_server``) never raises either.

GA_SERVER: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
BETA_SERVER: TypeAdapter[Any] = TypeAdapter(BetaRealtimeServerEvent)

GA_SESSION: dict[str, Any] = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_1",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "Be brief.",
    "tools": [],
    "tool_choice": "auto",
    "max_output_tokens": "inf",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1"},
            "noise_reduction": {"type": "near_field"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
    },
}
GA_ASSISTANT_ITEM: dict[str, Any] = {
    "id": "item_1",
    "type": "message",
    "object": "realtime.item",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_audio", "transcript": "Hi there."}],
}
GA_RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "realtime.response",
    "status": "completed",
    "output_modalities": ["audio"],
    "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
    "output": [GA_ASSISTANT_ITEM],
    "usage": {"total_tokens": 10, "input_tokens": 4, "output_tokens": 6},
}
_IDS = {"event_id": "event_1", "response_id": "resp_1", "item_id": "item_1"}
_AT = {"output_index": 0, "content_index": 0}
SERVER_EVENTS: dict[str, dict[str, Any]] = {
    "session.created": {"type": "session.created", "event_id": "event_1", "session": GA_SESSION},
    "session.updated": {"type": "session.updated", "event_id": "event_1", "session": GA_SESSION},
    "response.created": {
        "type": "response.created",
        "event_id": "event_1",
        "response": {**GA_RESPONSE, "status": "in_progress", "output": []},
    },
    "response.done": {"type": "response.done", "event_id": "event_1", "response": GA_RESPONSE},
    "conversation.item.added": {
        "type": "conversation.item.added",
        "event_id": "event_1",
        "previous_item_id": None,
        "item": GA_ASSISTANT_ITEM,
    },
    "conversation.item.done": {
        "type": "conversation.item.done",
        "event_id": "event_1",
        "previous_item_id": None,
        "item": GA_ASSISTANT_ITEM,
    },
    "response.output_item.added": {
        "type": "response.output_item.added",
        "event_id": "event_1",
        "response_id": "resp_1",
        "output_index": 0,
        "item": GA_ASSISTANT_ITEM,
    },
    "response.content_part.added": {
        "type": "response.content_part.added",
        **_IDS,
        **_AT,
        "part": {"type": "audio", "transcript": ""},
    },
    "response.output_audio.delta": {
        "type": "response.output_audio.delta",
        **_IDS,
        **_AT,
        "delta": "AAAAAA==",
    },
    "response.output_audio_transcript.done": {
        "type": "response.output_audio_transcript.done",
        **_IDS,
        **_AT,
        "transcript": "Hi there.",
    },
    "error": {
        "type": "error",
        "event_id": "event_1",
        "error": {"type": "invalid_request_error", "code": "x", "message": "no", "param": None},
    },
}
SERVER_TYPES = (*SERVER_EVENTS, *SERVER_RENAMES, "input_audio_buffer.speech_started")
SERVER_KEYS = ("type", "session", "response", "item", "part", "audio", "output", "delta")
ANY_SERVER_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(SERVER_TYPES)) | JSON_VALUES},
    optional={
        "session": st.dictionaries(
            st.sampled_from(sorted(GA_SESSION)) | WILD_TEXT, JSON_VALUES, max_size=5
        )
        | JSON_VALUES,
        "response": st.dictionaries(
            st.sampled_from(sorted(GA_RESPONSE)) | WILD_TEXT, JSON_VALUES, max_size=5
        )
        | JSON_VALUES,
        "item": JSON_VALUES,
        "part": JSON_VALUES,
        "delta": JSON_VALUES,
        "error": JSON_VALUES,
    },
)
ODD_FORMAT = {"type": ["audio/pcm"]}  # unhashable
ANY_JSON_OBJECT = st.dictionaries(st.sampled_from(SERVER_KEYS) | WILD_TEXT, JSON_VALUES)


def to_beta(value: object) -> dict[str, Any] | None:
    """``server_to_beta`` and ``record.from_server`` checked against their docstrings."""
    try:
        ga = delivered(value)
    except Undeliverable:  # the namespace never decodes it (tests/proxy/test_proxy_model.py)
        return None
    assert isinstance(ga, dict)
    before = json.dumps(ga)
    assert isinstance(from_server(ga, 1.0), list)
    out = server_to_beta(ga)
    assert json.dumps(ga) == before  # the event itself is left alone
    kind = ga.get("type")
    if out is None:
        assert kind in BETA_DROPPED
        return None
    json.dumps(out)  # goes on to the client as JSON
    if isinstance(kind, str):
        assert out["type"] == SERVER_RENAMES.get(kind, kind)
        event(f"translated {kind if kind in SERVER_TYPES else 'another type'}")
    else:
        assert out == ga
    return out


@pytest.mark.parametrize("kind", sorted(SERVER_EVENTS))
def test_valid_ga_server_events_translate_to_valid_beta_events(kind):
    ga = SERVER_EVENTS[kind]
    GA_SERVER.validate_python(ga)  # really what the model sends
    beta = server_to_beta(ga)
    if kind in BETA_DROPPED:
        assert beta is None
        return
    BETA_SERVER.validate_python(beta)  # what a beta client reads
    assert beta is not None and "output_modalities" not in json.dumps(beta)


@given(event_=ANY_SERVER_EVENT | ANY_JSON_OBJECT)
@example(event_={"type": "session.created", "session": {"audio": {"input": [1]}}})
@example(event_={"type": "session.updated", "session": {"audio": {"output": "x"}}})
@example(event_={"type": "session.created", "session": {"output_modalities": 5}})
@example(
    event_={"type": "session.created", "session": {"audio": {"input": {"format": {"type": []}}}}}
)
@example(event_={"type": "response.done", "response": {"audio": "x"}})
@example(event_={"type": "response.done", "response": {"audio": {"output": [1]}}})
@example(
    event_={"type": "response.done", "response": {"audio": {"output": {"format": {"type": {}}}}}}
)
@example(event_={"type": ["response.done"]})
@example(event_={"type": {"a": 1}})
def test_any_server_event_gives_a_beta_event_and_never_raises(event_):
    to_beta(event_)


@pytest.mark.parametrize("kind", sorted(SERVER_EVENTS))
@given(data=st.data())
def test_near_valid_server_events_give_a_beta_event(kind, data):
    to_beta(data.draw(mutated(SERVER_EVENTS[kind])))


@pytest.mark.parametrize("kind", sorted(SERVER_EVENTS))
@settings(max_examples=SWEEP_EXAMPLES)
@given(data=st.data())
def test_every_server_field_broken_every_way_gives_a_beta_event(kind, data):
    for broken in every_field_broken(data, SERVER_EVENTS[kind]):
        to_beta(broken)


@given(
    session=st.dictionaries(st.sampled_from((*GA_SESSION, *SESSION_KEYS)) | WILD_TEXT, JSON_VALUES)
)
def test_any_ga_session_reads_as_a_beta_session(session):
    try:
        session = delivered(session)
    except Undeliverable:
        return
    json.dumps(session_to_beta(session))
