"""Strict validation of what the bridge sends to 'Twilio', and the simulator's own codec."""

import base64
import json

import numpy as np
import pytest

from bridge.sim import messages
from bridge.sim.errors import SimulatorError, TwilioWouldReject
from bridge.sim.far_end import FarEnd, OutClear, OutMark, OutMedia, parse_outbound
from bridge.sim.ulaw import ulaw_decode, ulaw_encode

SID = "MZ" + "0" * 32


def dumps(message: object) -> str:
    return json.dumps(message, separators=(",", ":"))


def media(payload: object = "//8=", **extra: object) -> str:
    return dumps({"event": "media", "streamSid": SID, "media": {"payload": payload}, **extra})


def test_accepts_exactly_the_three_documented_messages() -> None:
    assert parse_outbound(media(base64.b64encode(b"\x01\x02").decode()), SID) == OutMedia(
        b"\x01\x02"
    )
    mark = dumps({"event": "mark", "streamSid": SID, "mark": {"name": "3:item_a"}})
    assert parse_outbound(mark, SID) == OutMark("3:item_a")
    assert parse_outbound(dumps({"event": "clear", "streamSid": SID}), SID) == OutClear()
    FarEnd(stream_sid=SID).accept(mark)


REJECTED = {
    "not JSON": "media please",
    "JSON array": "[1, 2]",
    "no event": dumps({"streamSid": SID, "media": {"payload": "//8="}}),
    "Twilio's own event": dumps({"event": "start", "streamSid": SID}),
    "unknown event": dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "1"}}),
    "no streamSid": dumps({"event": "clear"}),
    "wrong streamSid": dumps({"event": "clear", "streamSid": "MZ" + "1" * 32}),
    "non-string streamSid": dumps({"event": "clear", "streamSid": 7}),
    "extra top-level field": media(sequenceNumber="5"),
    "extra media field": dumps(
        {"event": "media", "streamSid": SID, "media": {"payload": "//8=", "track": "outbound"}}
    ),
    "media not an object": dumps({"event": "media", "streamSid": SID, "media": "//8="}),
    "no payload": dumps({"event": "media", "streamSid": SID, "media": {}}),
    "payload not a string": media(payload=[255]),
    "invalid base64 padding": media(payload="//8"),
    "invalid base64 alphabet": media(payload="__8="),
    "base64 with newline": media(payload="//8=\n"),
    "empty payload": media(payload=""),
    "mark without name": dumps({"event": "mark", "streamSid": SID, "mark": {}}),
    "mark name not a string": dumps({"event": "mark", "streamSid": SID, "mark": {"name": 3}}),
    "mark with extra field": dumps(
        {"event": "mark", "streamSid": SID, "mark": {"name": "1:a", "at": 3}}
    ),
    "clear with a body": dumps({"event": "clear", "streamSid": SID, "clear": {}}),
}


@pytest.mark.parametrize("message", REJECTED.values(), ids=REJECTED.keys())
def test_rejects_what_twilio_would(message: str) -> None:
    with pytest.raises(TwilioWouldReject) as caught:
        FarEnd(stream_sid=SID).accept(message)
    assert caught.value.code == 31951
    assert caught.value.reason
    assert isinstance(caught.value, SimulatorError)


def test_binary_frame_is_a_malformed_message() -> None:
    with pytest.raises(TwilioWouldReject) as caught:
        parse_outbound(media().encode(), SID)
    assert caught.value.code == 31950


def test_bridge_builders_pass_the_strict_check() -> None:
    twilio = pytest.importorskip("bridge.phone.protocol")
    stream = twilio.MediaStream()
    stream.receive(dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    stream.receive(
        dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": SID,
                    "callSid": "CA" + "0" * 32,
                    "tracks": ["inbound"],
                    "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": SID,
            }
        )
    )
    assert parse_outbound(stream.media(b"\xff" * 160), SID) == OutMedia(b"\xff" * 160)
    assert parse_outbound(stream.mark("1:item_a"), SID) == OutMark("1:item_a")
    assert parse_outbound(stream.clear(), SID) == OutClear()


def test_ulaw_tables_are_g711() -> None:
    decoded = ulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80, 0xFE, 0xEF]))
    assert decoded.tolist() == [0, 0, -32124, 32124, 8, 132]
    every_code = bytes(range(256))
    round_trip = ulaw_encode(ulaw_decode(every_code))
    assert [i for i in range(256) if round_trip[i] != i] == [0x7F]  # -0 encodes as +0
    # G.191: -1 falls in the negative zero bin; full scale clips to the end codes.
    assert ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xff\x7f\x80\x00"
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    error = np.abs(ulaw_decode(ulaw_encode(pcm)).astype(np.int32) - pcm)
    assert error.max() <= 644  # half the top segment's step, plus the clip at 32124


def test_ulaw_agrees_with_the_bridge_codec() -> None:
    g711 = pytest.importorskip("bridge.audio.g711")
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    assert ulaw_encode(pcm) == g711.ulaw_encode(pcm)
    every_code = bytes(range(256))
    assert np.array_equal(ulaw_decode(every_code), g711.ulaw_decode(every_code))


def test_bridge_parser_accepts_every_message_the_simulator_sends() -> None:
    twilio = pytest.importorskip("bridge.phone.protocol")
    stream = twilio.MediaStream()
    account, call = "AC" + "0" * 32, "CA" + "0" * 32
    sent = [
        messages.connected(),
        messages.start(
            1, stream_sid=SID, account_sid=account, call_sid=call, custom_parameters={"a": "b"}
        ),
        messages.media(2, stream_sid=SID, chunk=1, timestamp_ms=0, payload=b"\xff" * 160),
        messages.mark(3, stream_sid=SID, name="1:item_a"),
        messages.stop(4, stream_sid=SID, account_sid=account, call_sid=call),
    ]
    events = [stream.receive(message) for message in sent]
    assert [type(e).__name__ for e in events] == ["Connected", "Start", "Media", "Mark", "Stop"]
    assert events[1].custom_parameters == {"a": "b"}
    assert events[2].payload == b"\xff" * 160
    assert events[3].name == "1:item_a"
