import base64
import json
from typing import Any

import pytest
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseOutputItemAddedEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_server_event import OutputAudioBufferStarted

from bridge.agents import Agent, TurnDetection
from bridge.ai import events as rt
from bridge.errors import RealtimeProtocolError
from tests.ai.helpers import check_client_event

AGENT = Agent(
    instructions="Be brief.",
    voice="cedar",
    turn_detection=TurnDetection(threshold=0.6, prefix_padding_ms=250, silence_duration_ms=700),
)

BUILT = [
    rt.session_update(AGENT),
    rt.session_update(Agent(), transcription_model="whisper-1"),
    rt.input_audio_append(b"\x01\x00\xff\x7f" * 100),
    rt.input_audio_append(b""),
    rt.user_text("what time is it?"),
    rt.response_create(),
    rt.response_create("Say hello."),
    rt.response_cancel(),
    rt.response_cancel("resp_123"),
    rt.item_truncate("item_abc", 0, 1234),
]


@pytest.mark.parametrize("event", BUILT, ids=[e["type"] for e in BUILT])
def test_builders_validate_against_the_openai_client_models(event: dict[str, Any]) -> None:
    check_client_event(event)
    assert event["event_id"].startswith("event_")
    json.dumps(event)


def test_event_ids_are_unique() -> None:
    ids = {rt.response_create()["event_id"] for _ in range(1000)}
    assert len(ids) == 1000


def test_session_update_carries_the_agent() -> None:
    session = rt.session_update(AGENT)["session"]
    assert session["type"] == "realtime"
    assert session["instructions"] == "Be brief."
    assert session["output_modalities"] == ["audio"]
    audio_in, audio_out = session["audio"]["input"], session["audio"]["output"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_out["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_out["voice"] == "cedar"
    assert audio_in["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 250,
        "silence_duration_ms": 700,
        "create_response": True,
        "interrupt_response": True,
    }
    assert audio_in["transcription"] == {"model": "gpt-4o-mini-transcribe"}


@pytest.mark.parametrize(
    ("model_audio", "heard", "spoken"),
    [
        ("pcm16", "audio/pcm", "audio/pcm"),
        ("pcmu", "audio/pcmu", "audio/pcmu"),
        ("pcmu-in", "audio/pcmu", "audio/pcm"),
    ],
)
def test_session_update_sets_each_direction_of_the_model_audio(model_audio, heard, spoken):
    audio = rt.session_update(AGENT, audio_format=model_audio)["session"]["audio"]
    assert audio["input"]["format"]["type"] == heard
    assert audio["output"]["format"]["type"] == spoken
    for side in (audio["input"], audio["output"]):  # a rate only for audio/pcm
        fmt = side["format"]
        assert fmt.get("rate") == (24000 if fmt["type"] == "audio/pcm" else None)


def test_append_and_truncate_payloads() -> None:
    pcm = bytes(range(256)) * 3
    assert base64.b64decode(rt.input_audio_append(pcm)["audio"]) == pcm
    truncate = rt.item_truncate("item_1", 0, 1500.7)  # type: ignore[arg-type]
    assert truncate["audio_end_ms"] == 1500 and isinstance(truncate["audio_end_ms"], int)
    assert "response" not in rt.response_create()
    assert rt.response_create("x")["response"] == {"instructions": "x"}
    assert "response_id" not in rt.response_cancel()


# --------------------------------------------------------------------------- parser

ITEM: dict[str, Any] = {
    "id": "item_A",
    "object": "realtime.item",
    "type": "message",
    "status": "in_progress",
    "role": "assistant",
    "content": [],
}
RESPONSE: dict[str, Any] = {
    "object": "realtime.response",
    "id": "resp_A",
    "status": "in_progress",
    "output": [],
    "usage": None,
}
USAGE: dict[str, Any] = {"total_tokens": 30, "input_tokens": 10, "output_tokens": 20}
SESSION: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime", "instructions": "hi"}
PCM = b"\x00\x01\x02\x03" * 50

CASES: list[tuple[Any, dict[str, Any], rt.ServerEvent]] = [
    (SessionCreatedEvent, {"type": "session.created", "session": SESSION}, rt.SessionCreated()),
    (SessionUpdatedEvent, {"type": "session.updated", "session": SESSION}, rt.SessionUpdated()),
    (
        InputAudioBufferSpeechStartedEvent,
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1200, "item_id": "item_U"},
        rt.SpeechStarted(1200, "item_U"),
    ),
    (
        InputAudioBufferSpeechStoppedEvent,
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 4100, "item_id": "item_U"},
        rt.SpeechStopped(4100, "item_U"),
    ),
    (
        ResponseCreatedEvent,
        {"type": "response.created", "response": RESPONSE},
        rt.ResponseCreated("resp_A"),
    ),
    (
        ResponseOutputItemAddedEvent,
        {
            "type": "response.output_item.added",
            "response_id": "resp_A",
            "output_index": 0,
            "item": ITEM,
        },
        rt.OutputItemAdded("resp_A", "item_A", "assistant", "message"),
    ),
    (
        ResponseAudioDeltaEvent,
        {
            "type": "response.output_audio.delta",
            "response_id": "resp_A",
            "item_id": "item_A",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(PCM).decode(),
        },
        rt.AudioDelta("resp_A", "item_A", 0, PCM),
    ),
    (
        ResponseAudioDoneEvent,
        {
            "type": "response.output_audio.done",
            "response_id": "resp_A",
            "item_id": "item_A",
            "output_index": 0,
            "content_index": 0,
        },
        rt.AudioDone("resp_A", "item_A", 0),
    ),
    (
        ResponseAudioTranscriptDeltaEvent,
        {
            "type": "response.output_audio_transcript.delta",
            "response_id": "resp_A",
            "item_id": "item_A",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hel",
        },
        rt.TranscriptDelta("item_A", "Hel"),
    ),
    (
        ResponseAudioTranscriptDoneEvent,
        {
            "type": "response.output_audio_transcript.done",
            "response_id": "resp_A",
            "item_id": "item_A",
            "output_index": 0,
            "content_index": 0,
            "transcript": "Hello.",
        },
        rt.TranscriptDone("item_A", "Hello."),
    ),
    (
        ConversationItemInputAudioTranscriptionCompletedEvent,
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_U",
            "content_index": 0,
            "transcript": "hi there",
            "usage": {"type": "duration", "seconds": 1.2},
        },
        rt.InputTranscript("item_U", "hi there"),
    ),
    (
        ResponseDoneEvent,
        {"type": "response.done", "response": {**RESPONSE, "status": "cancelled", "usage": USAGE}},
        rt.ResponseDone("resp_A", "cancelled"),
    ),
    (
        RealtimeErrorEvent,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "response_cancel_not_active",
                "message": "Cancellation failed: no active response found",
                "event_id": "event_mine",
                "param": None,
            },
        },
        rt.ServerError(
            "invalid_request_error",
            "response_cancel_not_active",
            "Cancellation failed: no active response found",
            "event_mine",
        ),
    ),
    (
        OutputAudioBufferStarted,
        {"type": "output_audio_buffer.started", "response_id": "resp_A"},
        rt.Other("output_audio_buffer.started"),
    ),
]


@pytest.mark.parametrize(("model", "data", "expected"), CASES, ids=[c[1]["type"] for c in CASES])
def test_parses_server_events_built_by_the_openai_models(
    model: Any, data: dict[str, Any], expected: rt.ServerEvent
) -> None:
    wire = model.model_validate({"event_id": "event_srv", **data}).model_dump_json()
    parsed = rt.parse_server_event(wire)
    assert parsed == expected
    assert rt.parse_server_event(wire.encode()) == expected


def test_parsed_details() -> None:
    done = rt.parse_server_event(
        ResponseDoneEvent.model_validate(
            {
                "event_id": "e",
                "type": "response.done",
                "response": {"id": "r", "status": "completed", "usage": USAGE},
            }
        ).model_dump_json()
    )
    assert isinstance(done, rt.ResponseDone)
    assert done.usage["total_tokens"] == 30
    no_usage = rt.parse_server_event(
        json.dumps(
            {"type": "response.done", "event_id": "e", "response": {"id": "r", "status": "failed"}}
        )
    )
    assert isinstance(no_usage, rt.ResponseDone) and no_usage.usage == {}
    created = rt.parse_server_event(
        json.dumps({"type": "session.created", "event_id": "e", "session": SESSION})
    )
    assert isinstance(created, rt.SessionCreated) and created.session["model"] == "gpt-realtime"
    error = rt.parse_server_event(
        json.dumps(
            {
                "type": "error",
                "event_id": "e",
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_value",
                    "message": "m",
                    "param": "audio_end_ms",
                },
            }
        )
    )
    assert isinstance(error, rt.ServerError)
    assert (error.param, error.event_id) == ("audio_end_ms", None)
    function_item = rt.parse_server_event(
        json.dumps(
            {
                "type": "response.output_item.added",
                "event_id": "e",
                "response_id": "r",
                "output_index": 0,
                "item": {"id": "i", "type": "function_call"},
            }
        )
    )
    assert function_item == rt.OutputItemAdded("r", "i", None, "function_call")


@pytest.mark.parametrize(
    "kind",
    [
        "response.audio.delta",
        "response.audio_transcript.delta",
        "conversation.item.created",
        "rate_limits.updated",
        "something.new",
    ],
)
def test_unknown_and_beta_events_are_other(kind: str) -> None:
    message = json.dumps({"type": kind, "event_id": "e", "delta": "AAAA", "item_id": "i"})
    assert rt.parse_server_event(message) == rt.Other(kind)


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        "{}",
        '{"type": 5}',
        '{"type": "response.output_audio.delta", "response_id": "r", "content_index": 0,'
        ' "delta": ""}',
        '{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i",'
        ' "content_index": 0, "delta": "not base64!"}',
        '{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i",'
        ' "content_index": "0", "delta": "AAAA"}',
        '{"type": "input_audio_buffer.speech_started", "audio_start_ms": "12", "item_id": "i"}',
        '{"type": "input_audio_buffer.speech_started", "audio_start_ms": true, "item_id": "i"}',
        '{"type": "response.created", "response": null}',
        '{"type": "response.done", "response": {"id": "r"}}',
        '{"type": "error", "error": {"type": "x"}}',
        '{"type": "error", "error": {"type": "x", "message": "m", "code": 7}}',
    ],
)
def test_malformed_server_events_raise(message: str | bytes) -> None:
    with pytest.raises(RealtimeProtocolError) as info:
        rt.parse_server_event(message)
    assert not info.value.fatal
    assert str(info.value)
