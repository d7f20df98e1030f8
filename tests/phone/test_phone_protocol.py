"""Twilio Media Streams parsing and building (bridge.phone.protocol)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge import inputs
from bridge.errors import PhoneProtocolError
from bridge.phone.protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaStream,
    Start,
    Stop,
    leg_input,
)

STREAM = "MZ" + "0" * 32
CALL = "CA" + "1" * 32
ACCOUNT = "AC" + "2" * 32


def connected() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(**media_format: Any) -> dict[str, Any]:
    fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **media_format}
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": fmt,
            "customParameters": {"token": "t0k", "agent": "echo"},
        },
        "streamSid": STREAM,
    }


def media(payload: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {
        "track": "inbound",
        "chunk": "2",
        "timestamp": "20",
        "payload": base64.b64encode(b"\x7f" * 160).decode() if payload is None else payload,
    }
    body.update(fields)
    return {"event": "media", "sequenceNumber": "3", "media": body, "streamSid": STREAM}


def dtmf(digit: Any = "1") -> dict[str, Any]:
    return {
        "event": "dtmf",
        "streamSid": STREAM,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def mark(name: Any = "7:item_1") -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": name}}


def stop(call_sid: Any = CALL) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": "9",
        "stop": {"accountSid": ACCOUNT, "callSid": call_sid},
        "streamSid": STREAM,
    }


def text(message: dict[str, Any]) -> str:
    return json.dumps(message)


@pytest.fixture
def stream() -> MediaStream:
    s = MediaStream()
    s.receive(text(connected()))
    s.receive(text(start()))
    return s


def rejected(stream: MediaStream, message: str | bytes, *, fatal: bool = False) -> str:
    with pytest.raises(PhoneProtocolError) as info:
        stream.receive(message)
    assert info.value.fatal is fatal
    return str(info.value)


# -- accepted events ------------------------------------------------------------------


def test_connected() -> None:
    assert MediaStream().receive(text(connected())) == Connected("Call", "1.0.0")


def test_start_sets_stream_identity() -> None:
    s = MediaStream()
    event = s.receive(text(start()))
    assert event == Start(
        stream_sid=STREAM,
        call_sid=CALL,
        account_sid=ACCOUNT,
        tracks=("inbound",),
        custom_parameters={"token": "t0k", "agent": "echo"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
    )
    assert s.start == event
    assert s.stream_sid == STREAM
    assert s.call_sid == CALL


def test_start_without_custom_parameters() -> None:
    message = start()
    del message["start"]["customParameters"]
    event = MediaStream().receive(text(message))
    assert isinstance(event, Start)
    assert event.custom_parameters == {}


def test_media(stream: MediaStream) -> None:
    payload = bytes(range(256)) * 2
    event = stream.receive(text(media(base64.b64encode(payload).decode(), chunk="12")))
    assert event == Media(track="inbound", chunk=12, timestamp=20, payload=payload)


def test_media_compact_json(stream: MediaStream) -> None:
    message = json.dumps(media(), separators=(",", ":"))
    assert isinstance(stream.receive(message), Media)


def test_dtmf(stream: MediaStream) -> None:
    assert stream.receive(text(dtmf("#"))) == Dtmf("#")


def test_mark(stream: MediaStream) -> None:
    assert stream.receive(text(mark("12:item_abc"))) == Mark("12:item_abc")


def test_stop(stream: MediaStream) -> None:
    assert stream.receive(text(stop())) == Stop(CALL)
    assert stream.stopped


def test_stop_before_start_still_ends_the_stream() -> None:
    s = MediaStream()
    assert s.receive(text(stop())) == Stop(CALL)


# -- dropped frames (fatal=False) --------------------------------------------------------


def test_binary_frame_dropped(stream: MediaStream) -> None:
    assert "binary" in rejected(stream, text(media()).encode())


def test_non_json_dropped(stream: MediaStream) -> None:
    assert "JSON" in rejected(stream, '{"event": "media",')


def test_json_not_object_dropped(stream: MediaStream) -> None:
    assert "object" in rejected(stream, "[1, 2]")


def test_missing_event_dropped(stream: MediaStream) -> None:
    assert "event" in rejected(stream, json.dumps({"streamSid": STREAM}))


def test_event_not_string_dropped(stream: MediaStream) -> None:
    assert "event" in rejected(stream, '{"event": 5}')


def test_unknown_event_dropped(stream: MediaStream) -> None:
    message = {"event": "clear", "streamSid": STREAM, "sequenceNumber": "3"}
    assert "unknown event 'clear'" in rejected(stream, text(message))


def test_oversize_message_dropped() -> None:
    s = MediaStream(max_message_bytes=1000)
    s.receive(text(start()))
    big = text(media(base64.b64encode(b"\x00" * 1200).decode()))
    assert "exceeds 1000" in rejected(s, big)


def test_oversize_counts_utf8_bytes_not_characters() -> None:
    s = MediaStream(max_message_bytes=1000)
    s.receive(text(start()))
    message = json.dumps(mark("é" * 600), ensure_ascii=False)
    assert len(message) < 1000 < len(message.encode())
    assert "exceeds 1000" in rejected(s, message)


def test_media_before_start_dropped() -> None:
    assert "before start" in rejected(MediaStream(), text(media()))


def test_mark_before_start_dropped() -> None:
    assert "before start" in rejected(MediaStream(), text(mark()))


def test_dtmf_before_start_dropped() -> None:
    assert "before start" in rejected(MediaStream(), text(dtmf()))


def test_wrong_stream_sid_dropped(stream: MediaStream) -> None:
    message = media()
    message["streamSid"] = "MZ" + "9" * 32
    assert "wrong streamSid" in rejected(stream, text(message))


def test_missing_stream_sid_dropped(stream: MediaStream) -> None:
    message = media()
    del message["streamSid"]
    assert "streamSid" in rejected(stream, text(message))


def test_sequence_number_must_be_string(stream: MediaStream) -> None:
    message = media()
    message["sequenceNumber"] = 3
    assert "sequenceNumber" in rejected(stream, text(message))


def test_invalid_base64_dropped(stream: MediaStream) -> None:
    assert "base64" in rejected(stream, text(media("not base64!!")))


def test_base64_bad_padding_dropped(stream: MediaStream) -> None:
    assert "base64" in rejected(stream, text(media("f39/f3")))


def test_non_ascii_base64_dropped(stream: MediaStream) -> None:
    assert "base64" in rejected(stream, text(media("f39/éf3")))


def test_empty_payload_dropped(stream: MediaStream) -> None:
    assert "empty payload" in rejected(stream, text(media("")))


def test_payload_wrong_type_dropped(stream: MediaStream) -> None:
    message = media()
    message["media"]["payload"] = [1, 2]
    assert "payload" in rejected(stream, text(message))


def test_media_chunk_must_be_decimal_string(stream: MediaStream) -> None:
    assert "media.chunk" in rejected(stream, text(media(chunk=2)))


def test_media_timestamp_must_be_decimal_string(stream: MediaStream) -> None:
    assert "media.timestamp" in rejected(stream, text(media(timestamp="-5")))


def test_media_timestamp_rejects_non_ascii_digits(stream: MediaStream) -> None:
    assert "media.timestamp" in rejected(stream, text(media(timestamp="٣")))


def test_media_unknown_track_dropped(stream: MediaStream) -> None:
    assert "track" in rejected(stream, text(media(track="both")))


def test_media_object_missing_dropped(stream: MediaStream) -> None:
    message = media()
    message["media"] = "payload"
    assert "media object" in rejected(stream, text(message))


def test_mark_name_wrong_type_dropped(stream: MediaStream) -> None:
    assert "name" in rejected(stream, text(mark(7)))


def test_mark_object_missing_dropped(stream: MediaStream) -> None:
    message = mark()
    del message["mark"]
    assert "mark object" in rejected(stream, text(message))


def test_dtmf_bad_digit_dropped(stream: MediaStream) -> None:
    assert "DTMF digit" in rejected(stream, text(dtmf("12")))


def test_dtmf_digit_wrong_type_dropped(stream: MediaStream) -> None:
    assert "DTMF digit" in rejected(stream, text(dtmf(1)))


def test_stop_call_sid_wrong_type_dropped(stream: MediaStream) -> None:
    assert "callSid" in rejected(stream, text(stop(None)))
    assert not stream.stopped


def test_stop_for_another_call_dropped(stream: MediaStream) -> None:
    assert "callSid" in rejected(stream, text(stop("CA" + "8" * 32)))


def test_connected_after_start_dropped(stream: MediaStream) -> None:
    assert "after start" in rejected(stream, text(connected()))


def test_connected_fields_wrong_type_dropped() -> None:
    message = connected()
    message["version"] = 1
    assert "version" in rejected(MediaStream(), text(message))


def test_anything_after_stop_dropped(stream: MediaStream) -> None:
    stream.receive(text(stop()))
    assert "after stop" in rejected(stream, text(media()))


# -- fatal rejections ---------------------------------------------------------------------


def test_second_start_is_fatal(stream: MediaStream) -> None:
    assert "second start" in rejected(stream, text(start()), fatal=True)


@pytest.mark.parametrize(
    "media_format",
    [
        {"encoding": "audio/x-alaw"},
        {"encoding": "audio/l16"},
        {"sampleRate": 16000},
        {"sampleRate": "8000"},
        {"channels": 2},
        {"channels": True},
    ],
)
def test_start_with_other_media_format_is_fatal(media_format: dict[str, Any]) -> None:
    reason = rejected(MediaStream(), text(start(**media_format)), fatal=True)
    assert "mediaFormat" in reason


def test_start_missing_media_format_is_fatal() -> None:
    message = start()
    del message["start"]["mediaFormat"]
    assert "mediaFormat" in rejected(MediaStream(), text(message), fatal=True)


@pytest.mark.parametrize("field", ["streamSid", "callSid", "accountSid"])
def test_start_missing_sid_is_fatal(field: str) -> None:
    message = start()
    del message["start"][field]
    assert field in rejected(MediaStream(), text(message), fatal=True)


def test_start_tracks_wrong_type_is_fatal() -> None:
    message = start()
    message["start"]["tracks"] = "inbound"
    assert "tracks" in rejected(MediaStream(), text(message), fatal=True)


def test_start_custom_parameter_not_string_is_fatal() -> None:
    message = start()
    message["start"]["customParameters"] = {"token": 5}
    assert "customParameters" in rejected(MediaStream(), text(message), fatal=True)


def test_start_stream_sids_disagree_is_fatal() -> None:
    message = start()
    message["streamSid"] = "MZ" + "3" * 32
    assert "differs" in rejected(MediaStream(), text(message), fatal=True)


def test_start_without_sequence_number_is_fatal() -> None:
    message = start()
    del message["sequenceNumber"]
    assert "sequenceNumber" in rejected(MediaStream(), text(message), fatal=True)


def test_start_body_missing_is_fatal() -> None:
    message = start()
    message["start"] = None
    assert "start object" in rejected(MediaStream(), text(message), fatal=True)


def test_a_rejected_start_leaves_the_stream_unstarted() -> None:
    s = MediaStream()
    rejected(s, text(start(sampleRate=16000)), fatal=True)
    assert s.start is None and s.stream_sid is None


# -- builders -----------------------------------------------------------------------------


def test_media_builder_has_exactly_twilios_fields(stream: MediaStream) -> None:
    payload = bytes(range(256))
    message = stream.media(payload)
    assert " " not in message
    assert json.loads(message) == {
        "event": "media",
        "streamSid": STREAM,
        "media": {"payload": base64.b64encode(payload).decode()},
    }


def test_mark_builder_has_exactly_twilios_fields(stream: MediaStream) -> None:
    name = '3:item "quoted" \\ é'
    message = stream.mark(name)
    assert json.loads(message) == {"event": "mark", "streamSid": STREAM, "mark": {"name": name}}


def test_clear_builder_has_exactly_twilios_fields(stream: MediaStream) -> None:
    assert json.loads(stream.clear()) == {"event": "clear", "streamSid": STREAM}


def test_built_mark_round_trips_through_the_parser(stream: MediaStream) -> None:
    # Twilio echoes our mark with its own envelope; the name survives unchanged.
    sent = json.loads(stream.mark("41:item_X"))
    echo = {**sent, "sequenceNumber": "77"}
    assert stream.receive(text(echo)) == Mark("41:item_X")


def test_builders_refuse_before_start() -> None:
    s = MediaStream()
    with pytest.raises(PhoneProtocolError, match="before start"):
        s.media(b"\xff")
    with pytest.raises(PhoneProtocolError, match="before start"):
        s.mark("1:a")
    with pytest.raises(PhoneProtocolError, match="before start"):
        s.clear()


def test_builders_refuse_empty_payload_and_name(stream: MediaStream) -> None:
    with pytest.raises(PhoneProtocolError, match="empty media"):
        stream.media(b"")
    with pytest.raises(PhoneProtocolError, match="without a name"):
        stream.mark("")


def test_events_become_the_calls_typed_inputs() -> None:
    assert leg_input(Media("inbound", 1, 20, b"\xff")) == inputs.CallerAudio(b"\xff", 20)
    assert leg_input(Mark("3:item_a")) == inputs.FarEndMark("3:item_a")
    assert leg_input(Dtmf("5")) == inputs.Dtmf("5")
    assert leg_input(Stop(CALL)) == inputs.HangUp("caller hung up")
    assert leg_input(Connected("Call", "1.0.0")) is None
