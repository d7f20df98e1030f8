"""The messages Twilio sends on a bidirectional Media Stream, built as compact JSON text.

Pure builders, exactly the fields of Twilio's documented examples: numbers that Twilio
sends as strings (sequenceNumber, chunk, timestamp) are strings; ``connected`` carries no
sequenceNumber, ``start`` is number 1 and every later message counts up by one.
https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

import base64
import json
from typing import Any


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def connected() -> str:
    return _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(
    seq: int,
    *,
    stream_sid: str,
    account_sid: str,
    call_sid: str,
    custom_parameters: dict[str, str],
) -> str:
    return _dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )


def media(seq: int, *, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    return _dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": stream_sid,
        }
    )


def mark(seq: int, *, stream_sid: str, name: str) -> str:
    return _dumps(
        {
            "event": "mark",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop(seq: int, *, stream_sid: str, account_sid: str, call_sid: str) -> str:
    return _dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


def dtmf(seq: int, *, stream_sid: str, digit: str) -> str:
    """A keypad press, as Twilio sends it on a bidirectional stream."""
    return _dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )
