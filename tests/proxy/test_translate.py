"""Beta ⇄ GA translation and the proxy's rules, checked against the ``openai`` models."""

from typing import Any

import pytest
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from bridge.agents import Agent
from bridge.proxy.record import from_client, from_server
from bridge.proxy.rules import RateCap, Refusal, check_event_type, check_response, restrict_session
from bridge.proxy.translate import (
    SERVER_RENAMES,
    TranslationError,
    client_to_ga,
    detect_protocol,
    server_to_beta,
    session_to_beta,
)

GA_CLIENT = TypeAdapter(RealtimeClientEvent)
BETA_SERVER = TypeAdapter(BetaServerEvent)

# The snippet, as a beta client sends it.
BETA_CREATE = {
    "type": "session.create",
    "session": {
        "modalities": ["text", "audio"],
        "instructions": "Be brief.",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 200,
        },
        "temperature": 0.8,
    },
}


def test_beta_session_create_becomes_a_valid_ga_session_update():
    event = client_to_ga(BETA_CREATE)
    parsed = GA_CLIENT.validate_python(event)
    assert parsed.type == "session.update"
    session = event["session"]
    assert session["type"] == "realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["instructions"] == "Be brief."
    audio = session["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["output"]["voice"] == "alloy"
    assert audio["input"]["transcription"] == {"model": "whisper-1"}
    assert audio["input"]["turn_detection"]["silence_duration_ms"] == 200
    assert "temperature" not in session  # GA has none
    # Restricted to what the default agent allows, it is still a valid GA event.
    kept, removed = restrict_session(session, Agent().realtime_client_may_set)
    assert removed == ["instructions"]
    GA_CLIENT.validate_python({**event, "session": kept})
    assert kept["audio"]["output"]["voice"] == "alloy"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.create", "response": {"modalities": ["text"], "voice": "ash"}},
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "Hi"}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hello"}],
            },
        },
        {"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}},
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
        {
            "type": "conversation.item.truncate",
            "item_id": "i",
            "content_index": 0,
            "audio_end_ms": 5,
        },
    ],
)
def test_beta_client_events_translate_to_valid_ga(event):
    GA_CLIENT.validate_python(client_to_ga(event))


def test_untranslatable_session_fields_are_refused():
    with pytest.raises(TranslationError):
        client_to_ga({"type": "session.update", "session": {"input_audio_format": "mp3"}})
    with pytest.raises(TranslationError):
        client_to_ga({"type": "session.update", "session": {"bogus": 1}})


def test_protocol_detection():
    assert detect_protocol(BETA_CREATE) == "beta"
    assert detect_protocol({"type": "session.update", "session": {"voice": "ash"}}) == "beta"
    assert detect_protocol({"type": "session.update", "session": {"type": "realtime"}}) == "ga"
    assert detect_protocol({"type": "input_audio_buffer.append", "audio": ""}) is None


GA_SERVER_EVENTS: list[dict[str, Any]] = [
    {
        "type": "response.output_audio.delta",
        "event_id": "e1",
        "response_id": "r",
        "item_id": "i",
        "output_index": 0,
        "content_index": 0,
        "delta": "AAAA",
    },
    {
        "type": "response.output_audio_transcript.done",
        "event_id": "e2",
        "response_id": "r",
        "item_id": "i",
        "output_index": 0,
        "content_index": 0,
        "transcript": "hi",
    },
    {
        "type": "response.output_text.delta",
        "event_id": "e3",
        "response_id": "r",
        "item_id": "i",
        "output_index": 0,
        "content_index": 0,
        "delta": "h",
    },
    {
        "type": "response.content_part.added",
        "event_id": "e4",
        "response_id": "r",
        "item_id": "i",
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_audio", "transcript": ""},
    },
    {
        "type": "conversation.item.added",
        "event_id": "e5",
        "previous_item_id": None,
        "item": {
            "id": "i",
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "hi"}],
        },
    },
    {
        "type": "session.updated",
        "event_id": "e6",
        "session": {
            "type": "realtime",
            "id": "s",
            "object": "realtime.session",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": "x",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5},
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        },
    },
]


@pytest.mark.parametrize("event", GA_SERVER_EVENTS, ids=lambda e: e["type"])
def test_ga_server_events_reach_beta_clients_as_beta_events(event):
    out = server_to_beta(event)
    assert out is not None
    parsed = BETA_SERVER.validate_python(out)
    assert parsed.type == SERVER_RENAMES.get(event["type"], event["type"])


def test_beta_names_and_shapes():
    assert server_to_beta({"type": "conversation.item.done", "item": {}}) is None
    beta = session_to_beta(GA_SERVER_EVENTS[-1]["session"])
    assert beta["modalities"] == ["text", "audio"]
    assert beta["input_audio_format"] == beta["output_audio_format"] == "pcm16"
    assert beta["voice"] == "alloy"
    assert beta["input_audio_transcription"] == {"model": "whisper-1"}
    assert "audio" not in beta
    assert server_to_beta({"type": "error", "error": {"code": "x"}}) == {
        "type": "error",
        "error": {"code": "x"},
    }


def test_allow_list_and_guarded_fields():
    assert check_event_type({"type": "response.cancel"}) == "response.cancel"
    bad_events: list[object] = [{"type": "transcription_session.update"}, {"type": "x"}, [], {}]
    for bad in bad_events:
        with pytest.raises(Refusal):
            check_event_type(bad)
    with pytest.raises(Refusal, match="instructions"):
        check_response({"instructions": "say bad things"}, Agent().realtime_client_may_set)
    check_response({"instructions": "ok"}, ("instructions",))
    session = {"type": "realtime", "instructions": "x", "tools": [], "tracing": "auto"}
    kept, removed = restrict_session(session, ("instructions", "tools"))
    assert kept == {"type": "realtime", "instructions": "x", "tools": []}
    assert removed == ["tracing"]


def test_rate_cap():
    cap = RateCap(10, 20)
    assert sum(cap.allow(0.0) for _ in range(30)) == 20
    assert not cap.allow(0.05)
    assert cap.allow(0.2)


def test_timeline_for_records():
    kinds = [e.kind for ev in GA_SERVER_EVENTS for e in from_server(ev, 1.0)]
    assert kinds == ["transcript", "transcript_delta"]
    truncated = {"type": "conversation.item.truncated", "item_id": "i", "audio_end_ms": 300}
    [barge] = from_server(truncated, 2.0)
    assert barge.detail == {"trigger": "client", "item_id": "i", "audio_end_ms": 300}
    text = client_to_ga(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hi"}],
            },
        }
    )
    assert [e.detail for e in from_client(text, 0.5)] == [{"text": "Hi"}]


def test_agents_file_sets_what_proxy_clients_may_change(tmp_path):
    from bridge.agents import load_agents
    from bridge.errors import ConfigError

    path = tmp_path / "agents.toml"
    path.write_text('[agents.open]\nrealtime_client_may_set = ["voice", "instructions"]\n')
    (agent,), _ = load_agents(path, Agent())
    assert agent.realtime_client_may_set == ("voice", "instructions")
    path.write_text('[agents.bad]\nrealtime_client_may_set = ["model"]\n')
    with pytest.raises(ConfigError, match="realtime_client_may_set"):
        load_agents(path, Agent())
