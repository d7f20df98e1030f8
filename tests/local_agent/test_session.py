import base64
import re
from typing import Any

import numpy as np
import pytest

from bridge.agents import Agent, TurnDetection
from bridge.ai import events as rt
from bridge.local_agent.response import GREETING_TRANSCRIPT, load_greeting
from bridge.local_agent.session import AgentSession
from tests.ai.helpers import Driver, correlation, load_pcm, silence, speech_regions

SPEECH = load_pcm("fixtures/speech-24k.wav")
FIRST_PHRASE = SPEECH[: int(6.3 * 24000)]  # up to the fixture's first long pause
AGENT = Agent(turn_detection=TurnDetection(prefix_padding_ms=300, silence_duration_ms=500))


def configured(**options: Any) -> Driver:
    d = Driver(**options)
    assert d.send(rt.session_update(AGENT))[0]["type"] == "session.updated"
    return d


def utterance(
    lead_ms: int = 1500, tail_ms: int = 3000, speech: np.ndarray = FIRST_PHRASE
) -> np.ndarray:
    return np.concatenate([silence(lead_ms), speech, silence(tail_ms)])


def last_error(d: Driver) -> dict[str, Any]:
    kind, error = d.events[-1][1]["type"], d.events[-1][1]["error"]
    assert kind == "error"
    assert d.session.errors[-1] == d.events[-1][1]
    return dict(error)


# --------------------------------------------------------------------------- session


def test_session_created_then_updated() -> None:
    d = Driver(model="gpt-realtime-mini")
    created = d.events[0][1]
    assert created["type"] == "session.created"
    assert created["session"]["type"] == "realtime"
    assert created["session"]["model"] == "gpt-realtime-mini"
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    updated = d.send(rt.session_update(AGENT))
    assert [e["type"] for e in updated] == ["session.updated"]
    session = updated[0]["session"]
    assert session["id"] == created["session"]["id"]
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["audio"]["output"]["voice"] == AGENT.voice
    assert session["instructions"] == AGENT.instructions
    # Only the fields present change.
    again = d.send(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "Shorter."}}
    )
    assert again[0]["session"]["instructions"] == "Shorter."
    assert again[0]["session"]["audio"] == session["audio"]


def test_expires_at_follows_the_maximum_duration() -> None:
    session = AgentSession(now=5.0, created_at=1_700_000_000.0, max_duration_s=600)
    assert session.start()[0]["session"]["expires_at"] == 1_700_000_600


# --------------------------------------------------------------------------- echo


def test_vad_timing_commit_and_echo_content() -> None:
    d = configured()
    pcm = utterance()
    ((onset, end),) = speech_regions(pcm, gap_ms=500)
    d.stream(pcm)

    (started,) = d.of_type("input_audio_buffer.speech_started")
    (stopped,) = d.of_type("input_audio_buffer.speech_stopped")
    assert abs(started["audio_start_ms"] + 300 - onset) <= 40
    assert abs(stopped["audio_end_ms"] - (end + 500)) <= 40
    user_item = started["item_id"]
    assert stopped["item_id"] == user_item
    assert d.of_type("input_audio_buffer.committed")[0]["item_id"] == user_item
    (transcript,) = d.of_type("conversation.item.input_audio_transcription.completed")
    assert transcript["item_id"] == user_item
    assert re.fullmatch(r"\[caller speech \d+\.\d s\]", transcript["transcript"])

    (added,) = d.of_type("response.output_item.added")
    item = added["item"]["id"]
    echo = d.audio_of(item)
    start_ms, end_ms = started["audio_start_ms"], stopped["audio_end_ms"]
    expected = pcm[start_ms * 24 : end_ms * 24]
    assert len(echo) == expected.size * 2
    assert correlation(echo, expected) > 0.999
    assert d.session.responses[item] == echo
    assert d.session.audio_sent_ms[item] == pytest.approx(len(echo) / 48)
    (done,) = d.of_type("response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_token_details"]["audio_tokens"] > 0
    assert d.session.errors == []


def test_echo_event_sequence() -> None:
    d = configured()
    d.stream(utterance())
    assert d.types()[2:] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]


def test_deltas_vary_in_size_and_stream_faster_than_real_time() -> None:
    d = configured(speedup=4.0, chunk_ms=(40, 400))
    d.stream(utterance())
    deltas = [
        (t, len(base64.b64decode(e["delta"])))
        for t, e in d.events
        if e["type"] == "response.output_audio.delta"
    ]
    sizes = [n for _, n in deltas]
    assert len(set(sizes)) >= 5
    assert all(40 * 48 <= n <= 400 * 48 for n in sizes[:-1])
    duration = sum(sizes) / 48000
    span = deltas[-1][0] - deltas[0][0]
    assert duration / 6 < span < duration / 3.5
    # Transcript deltas add up to the final transcript.
    spoken = "".join(e["delta"] for e in d.of_type("response.output_audio_transcript.delta"))
    (final,) = d.of_type("response.output_audio_transcript.done")
    assert spoken == final["transcript"] and final["transcript"].startswith("[echo")


def test_response_create_with_nothing_pending_plays_the_greeting() -> None:
    d = configured()
    d.send(rt.response_create("Greet the caller."))
    d.wait(3.0)
    (added,) = d.of_type("response.output_item.added")
    audio = d.audio_of(added["item"]["id"])
    greeting = load_greeting()
    assert len(audio) == len(greeting) and correlation(audio, greeting) > 0.999
    (final,) = d.of_type("response.output_audio_transcript.done")
    assert final["transcript"] == GREETING_TRANSCRIPT
    assert d.of_type("response.done")[0]["response"]["status"] == "completed"


def test_user_text_item_then_response_plays_the_greeting() -> None:
    d = configured()
    out = d.send(rt.user_text("hello?"))
    assert [e["type"] for e in out] == ["conversation.item.added", "conversation.item.done"]
    assert out[0]["item"]["content"] == [{"type": "input_text", "text": "hello?"}]
    d.send(rt.response_create())
    d.wait(2.0)
    assert d.of_type("response.done")[0]["response"]["status"] == "completed"


# --------------------------------------------------------------------------- interruption


def greeting_then_speech(**options: Any) -> tuple[Driver, str]:
    d = configured(speedup=1.0, **options)  # the greeting streams for its full 4.3 s
    d.send(rt.response_create())
    (added,) = d.of_type("response.output_item.added")
    d.stream(utterance(lead_ms=500, tail_ms=1500, speech=SPEECH[:48000]))
    return d, added["item"]["id"]


def test_speech_during_a_response_cancels_it() -> None:
    d, greeting_item = greeting_then_speech()
    (started,) = d.of_type("input_audio_buffer.speech_started")
    started_at = next(i for i, (_, e) in enumerate(d.events) if e is started)
    after = [e for _, e in d.events[started_at:]]
    done = next(e for e in after if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["response"]["output"][0]["status"] == "incomplete"
    assert not any(
        e["type"] == "response.output_audio.delta" and e["item_id"] == greeting_item for e in after
    )
    sent = d.session.audio_sent_ms[greeting_item]
    assert 300 < sent < 1000 and sent == pytest.approx(len(d.audio_of(greeting_item)) / 48)
    spoken = "".join(
        e["delta"]
        for e in d.of_type("response.output_audio_transcript.delta")
        if e["item_id"] == greeting_item
    )
    final = next(e for e in after if e["type"] == "response.output_audio_transcript.done")
    assert final["transcript"] == spoken != GREETING_TRANSCRIPT
    # The caller's utterance then gets its own, complete answer.
    d.wait(4.0)
    dones = d.of_type("response.done")
    assert [r["response"]["status"] for r in dones] == ["cancelled", "completed"]


def test_without_interrupt_response_the_response_runs_on() -> None:
    d = Driver(speedup=1.0)
    d.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": 500,
                            "interrupt_response": False,
                        }
                    }
                },
            },
        }
    )
    d.send(rt.response_create())
    d.stream(utterance(lead_ms=500, tail_ms=1000, speech=SPEECH[:48000]))
    assert len(d.of_type("input_audio_buffer.speech_stopped")) == 1
    d.wait(3.0)
    assert [r["response"]["status"] for r in d.of_type("response.done")] == ["completed"]
    # The committed utterance is still pending: the next response.create echoes it.
    d.send(rt.response_create())
    d.wait(5.0)
    assert len(d.of_type("response.done")) == 2
    assert d.of_type("response.output_audio_transcript.done")[1]["transcript"].startswith("[echo")


def test_response_cancel() -> None:
    d = configured()
    d.send(rt.response_create())
    response_id = d.of_type("response.created")[0]["response"]["id"]
    d.send(rt.response_create())
    assert last_error(d)["code"] == "conversation_already_has_active_response"
    d.send(rt.response_cancel("resp_other"))
    assert last_error(d)["code"] == "response_cancel_not_active"
    out = d.send(rt.response_cancel(response_id))
    assert out[-2]["type"] == "response.done"
    assert out[-2]["response"]["status_details"]["reason"] == "client_cancelled"
    cancel = rt.response_cancel()
    d.send(cancel)
    error = last_error(d)
    assert error["code"] == "response_cancel_not_active"
    assert error["event_id"] == cancel["event_id"]
    assert error["message"] == "Cancellation failed: no active response found"


# --------------------------------------------------------------------------- truncate


def test_truncate_rules() -> None:
    d, greeting_item = greeting_then_speech()
    user_item = d.of_type("input_audio_buffer.committed")[0]["item_id"]
    sent = d.session.audio_sent_ms[greeting_item]

    d.send(rt.item_truncate("item_nope", 0, 10))
    assert last_error(d)["code"] == "item_truncate_invalid_item_id"
    d.send(rt.item_truncate(user_item, 0, 10))
    assert (last_error(d)["code"], last_error(d)["param"]) == ("invalid_value", "item_id")
    d.send(rt.item_truncate(greeting_item, 1, 10))
    assert last_error(d)["param"] == "content_index"
    too_far = rt.item_truncate(greeting_item, 0, int(sent) + 1)
    d.send(too_far)
    error = last_error(d)
    assert (error["code"], error["param"], error["event_id"]) == (
        "invalid_value",
        "audio_end_ms",
        too_far["event_id"],
    )
    assert "already shorter than" in error["message"]
    assert d.session.truncates == []

    out = d.send(rt.item_truncate(greeting_item, 0, int(sent)))
    assert out[-1] == {
        **out[-1],
        "type": "conversation.item.truncated",
        "item_id": greeting_item,
        "content_index": 0,
        "audio_end_ms": int(sent),
    }
    assert d.session.truncates == [(greeting_item, 0, int(sent))]
    assert len(d.session.errors) == 4


# --------------------------------------------------------------------------- strictness

BAD_EVENTS: list[tuple[dict[str, Any], str, str | None]] = [
    ({"type": "nope"}, "invalid_value", "type"),
    ({"type": "transcription_session.update", "session": {}}, "invalid_value", "type"),
    ({"type": "output_audio_buffer.clear"}, "invalid_value", "type"),
    ({"type": "response.audio.delta", "delta": "AAAA"}, "invalid_value", "type"),
    ({"audio": "AAAA"}, "missing_required_parameter", "type"),
    (
        {
            "type": "session.update",
            "session": {"modalities": ["audio"], "input_audio_format": "pcm16"},
        },
        "missing_required_parameter",
        "session.type",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "input_audio_format": "pcm16"}},
        "unknown_parameter",
        "session.input_audio_format",
    ),
    (
        {"type": "session.update", "session": {"type": "transcription"}},
        "invalid_value",
        "session.type",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
        },
        "integer_below_min_value",
        "session.audio.input.format.rate",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": 48000}}},
            },
        },
        "integer_above_max_value",
        "session.audio.output.format.rate",
    ),
    (
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "pcm16"}}}},
        },
        "invalid_value",
        "session.audio.input.format.type",
    ),
    (
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcma"}}}},
        },
        "invalid_value",
        "session.audio.input.format.type",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_ms": 5}}},
            },
        },
        "unknown_parameter",
        "session.audio.input.turn_detection.silence_ms",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
            },
        },
        "invalid_value",
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": "robot"}}},
        },
        "invalid_value",
        "session.audio.output.voice",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": "pcm"}}},
        "invalid_type",
        "session.audio.input",
    ),
    ({"type": "session.update", "session": "realtime"}, "invalid_type", "session"),
    ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "input_audio_buffer.append", "audio": 12}, "invalid_type", "audio"),
    (
        {"type": "input_audio_buffer.append", "audio": "AAAA", "rate": 8000},
        "unknown_parameter",
        "rate",
    ),
    ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": "10",
        },
        "invalid_type",
        "audio_end_ms",
    ),
    (
        {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0},
        "missing_required_parameter",
        "audio_end_ms",
    ),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        "item_truncate_invalid_item_id",
        "item_id",
    ),
    ({"type": "response.cancel"}, "response_cancel_not_active", None),
    (
        {"type": "response.create", "response": {"modalities": ["audio"]}},
        "unknown_parameter",
        "response.modalities",
    ),
    ({"type": "conversation.item.delete", "item_id": "item_x"}, "invalid_value", "item_id"),
    ({"type": "conversation.item.retrieve", "item_id": "item_x"}, "invalid_value", "item_id"),
    ({"type": "conversation.item.create", "item": {"type": "note"}}, "invalid_value", "item.type"),
]


@pytest.mark.parametrize(
    ("event", "code", "param"), BAD_EVENTS, ids=[f"{e.get('type')}-{c}" for e, c, _ in BAD_EVENTS]
)
def test_bad_client_events_get_an_error_naming_them(
    event: dict[str, Any], code: str, param: str | None
) -> None:
    d = configured()
    before = d.session.config
    d.send({**event, "event_id": "event_bad1"})
    error = last_error(d)
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        code,
        param,
        "event_bad1",
    )
    assert error["message"]
    assert d.session.config == before  # a rejected update changes nothing


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b'{"type": "response.create"}', "invalid_event"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
    ],
)
def test_frames_that_are_not_events(frame: str | bytes, code: str) -> None:
    d = configured()
    d.send(frame)
    assert (last_error(d)["code"], last_error(d)["event_id"]) == (code, None)
    assert d.session.active_response_id is None


# --------------------------------------------------------------------------- lifecycle


def test_session_expires_after_its_maximum_duration() -> None:
    d = configured(max_duration_s=5.0, speedup=1.0)
    d.wait(3.0)
    d.send(rt.response_create())  # still speaking when the session ends
    d.wait(1.9)
    assert d.session.closed is None
    d.wait(0.2)
    error = last_error(d)
    assert error["code"] == "session_expired"
    assert error["message"] == "Your session hit the maximum duration of 5 seconds."
    assert d.session.closed == (1001, error["message"])
    assert d.session.next_due() is None
    assert (
        d.session.audio_sent_ms[d.of_type("response.output_item.added")[0]["item"]["id"]]
        <= 2000 + 400
    )
    assert d.send(rt.response_create()) == []
    assert d.session.poll(100.0) == []


def test_default_maximum_is_thirty_minutes() -> None:
    session = AgentSession(now=0.0)
    assert session.next_due() == 1800.0
    assert session.poll(1799.9) == []
    (error,) = session.poll(1800.0)
    assert error["error"]["message"] == "Your session hit the maximum duration of 30 minutes."


def test_manual_turn_taking_without_vad() -> None:
    d = Driver()
    d.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}
                },
            },
        }
    )
    pcm = utterance(lead_ms=200, tail_ms=200, speech=SPEECH[:24000])
    d.stream(pcm)
    assert d.of_type("input_audio_buffer.speech_started") == []
    out = d.send({"type": "input_audio_buffer.commit"})
    assert [e["type"] for e in out] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert d.of_type("response.created") == []
    d.send({"type": "input_audio_buffer.commit"})
    assert last_error(d)["code"] == "input_audio_buffer_commit_empty"
    d.send(rt.response_create())
    d.wait(2.0)
    item = d.of_type("response.output_item.added")[0]["item"]["id"]
    echo = d.audio_of(item)
    assert len(echo) == pcm.size * 2 and correlation(echo, pcm) > 0.999
    d.stream(silence(300))
    assert d.send({"type": "input_audio_buffer.clear"})[0]["type"] == "input_audio_buffer.cleared"
    d.send({"type": "input_audio_buffer.commit"})
    assert last_error(d)["code"] == "input_audio_buffer_commit_empty"


def test_no_transcription_event_unless_configured() -> None:
    d = Driver()  # the service's default session has transcription off
    d.stream(utterance(speech=SPEECH[:24000], tail_ms=1000))
    assert d.of_type("input_audio_buffer.committed")
    assert d.of_type("conversation.item.input_audio_transcription.completed") == []


def test_items_can_be_retrieved_and_deleted() -> None:
    d = configured()
    d.stream(utterance(speech=SPEECH[:24000], tail_ms=1000))
    user_item = d.of_type("input_audio_buffer.committed")[0]["item_id"]
    (got,) = d.send({"type": "conversation.item.retrieve", "item_id": user_item})
    assert got["type"] == "conversation.item.retrieved" and got["item"]["role"] == "user"
    (deleted,) = d.send({"type": "conversation.item.delete", "item_id": user_item})
    assert deleted == {**deleted, "type": "conversation.item.deleted", "item_id": user_item}
    d.send({"type": "conversation.item.retrieve", "item_id": user_item})
    assert last_error(d)["code"] == "invalid_value"


def test_input_buffer_stays_bounded() -> None:
    d = configured()
    d.stream(silence(30_000), chunk_ms=100)
    assert d.session.input_buffered_ms < 8000
    d.stream(utterance(lead_ms=0, tail_ms=1000, speech=SPEECH[: 24000 * 2]))
    assert d.session.input_buffered_ms < 8000
    assert len(d.of_type("input_audio_buffer.committed")) == 1


def test_odd_sized_appends_keep_the_timeline() -> None:
    d = configured()
    pcm = utterance(speech=SPEECH[: 24000 * 2], tail_ms=1000).tobytes()
    for i in range(0, len(pcm), 961):  # odd sizes split samples across appends
        d.send(rt.input_audio_append(pcm[i : i + 961]))
    (started,) = d.of_type("input_audio_buffer.speech_started")
    ((onset, _),) = speech_regions(np.frombuffer(pcm, dtype="<i2"))
    assert abs(started["audio_start_ms"] + 300 - onset) <= 40
