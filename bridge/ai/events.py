"""OpenAI Realtime (GA) events: client-event builders and a server-event parser. Sans-I/O.

Owns the wire shape of the Realtime protocol and nothing else: no sockets, no clock, no
call state. Builders return plain dicts ready to encode as JSON; every one carries an
``event_id`` so that a server ``error`` can be traced back to the event that caused it.
The parser turns one server text frame into a small frozen dataclass. It runs once per
audio delta (dozens per second per call), so it does one ``orjson.loads`` and reads only the
fields it needs; the ``openai`` package's pydantic models are used by the tests, not here.

GA shape only (https://platform.openai.com/docs/api-reference/realtime): the session has
``type: "realtime"`` and audio lives under ``session.audio.{input,output}``; output audio
arrives as ``response.output_audio.delta``. Beta names such as ``response.audio.delta``
parse as :class:`Other`, like any event the bridge does not act on.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge import b64
from bridge.agents import Agent
from bridge.audio.formats import MODEL_RATE, ModelAudio, hears_pcmu, speaks_pcmu
from bridge.errors import RealtimeProtocolError
from bridge.tools.spec import declarations, trigger_lines

logger = logging.getLogger(__name__)

PCM_FORMAT: dict[str, Any] = {"type": "audio/pcm", "rate": MODEL_RATE}
PCMU_FORMAT: dict[str, Any] = {"type": "audio/pcmu"}  # G.711 μ-law 8 kHz


def new_event_id() -> str:
    """A client event id in the style the service uses (``event_`` + 20 hex digits)."""
    return "event_" + secrets.token_hex(10)


# --------------------------------------------------------------------------- client events


def session_update(
    agent: Agent,
    *,
    transcription_model: str = "gpt-4o-mini-transcribe",
    audio_format: ModelAudio = "pcm16",
) -> dict[str, Any]:
    """``session.update`` configuring a phone agent: PCM16 24 kHz both ways (or μ-law 8 kHz
    both ways, ``audio_format="pcmu"``, or toward the model only, ``"pcmu-in"``), server
    VAD."""
    td = agent.turn_detection
    heard = PCMU_FORMAT if hears_pcmu(audio_format) else PCM_FORMAT
    spoken = PCMU_FORMAT if speaks_pcmu(audio_format) else PCM_FORMAT
    return {
        "type": "session.update",
        "event_id": new_event_id(),
        "session": {
            "type": "realtime",
            "instructions": _instructions(agent),
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": dict(heard),
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": td.threshold,
                        "prefix_padding_ms": td.prefix_padding_ms,
                        "silence_duration_ms": td.silence_duration_ms,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                    "transcription": {"model": transcription_model},
                },
                "output": {
                    "format": dict(spoken),
                    "voice": agent.voice,
                    # 0.25-1.5, between turns only; the default is left unsaid.
                    **({"speed": agent.speed} if agent.speed != 1.0 else {}),
                },
            },
            **_tools(agent),
        },
    }


def _instructions(agent: Agent) -> str:
    """The agent's instructions, and the local agent's tool triggers if it has any."""
    if not agent.local_tool_triggers:
        return agent.instructions
    return agent.instructions + "\n\n" + trigger_lines(agent.local_tool_triggers)


def _tools(agent: Agent) -> dict[str, Any]:
    """``session.tools`` and ``tool_choice`` when the agent has any tools."""
    targets = agent.transfer.names if agent.transfer else ()
    tools = declarations(agent.tools, agent.builtin_tools, targets)
    return {"tools": tools, "tool_choice": "auto"} if tools else {}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """``conversation.item.create`` answering a function call (send a response.create next)."""
    return {
        "type": "conversation.item.create",
        "event_id": new_event_id(),
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def input_audio_append(audio: bytes) -> dict[str, Any]:
    """``input_audio_buffer.append`` with audio in the session's input format."""
    return {
        "type": "input_audio_buffer.append",
        "event_id": new_event_id(),
        "audio": b64.encode(audio),
    }


def user_text(text: str) -> dict[str, Any]:
    """``conversation.item.create`` adding a typed user message (send a response.create next)."""
    return {
        "type": "conversation.item.create",
        "event_id": new_event_id(),
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


def assistant_text(text: str) -> dict[str, Any]:
    """``conversation.item.create`` adding what the agent said (replayed into a new session).

    A client-created assistant message carries ``output_text`` content (GA).
    """
    return {
        "type": "conversation.item.create",
        "event_id": new_event_id(),
        "item": {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        },
    }


def response_create(instructions: str | None = None) -> dict[str, Any]:
    """``response.create``; ``instructions`` override the session's for this response."""
    event: dict[str, Any] = {"type": "response.create", "event_id": new_event_id()}
    if instructions is not None:
        event["response"] = {"instructions": instructions}
    return event


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    """``response.cancel`` for the in-flight response (or a named one)."""
    event: dict[str, Any] = {"type": "response.cancel", "event_id": new_event_id()}
    if response_id is not None:
        event["response_id"] = response_id
    return event


def item_truncate(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    """``conversation.item.truncate``: the caller heard only ``audio_end_ms`` of this item.

    The service rejects an ``audio_end_ms`` longer than the audio it sent for the item.
    """
    return {
        "type": "conversation.item.truncate",
        "event_id": new_event_id(),
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": int(audio_end_ms),
    }


# --------------------------------------------------------------------------- server events


@dataclass(frozen=True)
class SessionCreated:
    session: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SessionUpdated:
    session: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    role: str | None
    type: str
    name: str | None = None  # a function_call item: the tool's name and the call's id
    call_id: str | None = None


@dataclass(frozen=True)
class FunctionCallArguments:
    """``response.function_call_arguments.done``: the model's arguments, as JSON text."""

    response_id: str
    item_id: str
    call_id: str
    arguments: str


@dataclass(frozen=True)
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes


@dataclass(frozen=True)
class AudioDone:
    response_id: str
    item_id: str
    content_index: int


@dataclass(frozen=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True)
class TranscriptDone:
    item_id: str
    transcript: str


@dataclass(frozen=True)
class InputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: str
    usage: dict[str, Any] = field(default_factory=dict, compare=False)


# The ``error`` code a ``response.create`` earns while another response is in progress.
ACTIVE_RESPONSE = "conversation_already_has_active_response"


@dataclass(frozen=True)
class ServerError:
    type: str
    code: str | None
    message: str
    event_id: str | None  # the client event that caused it, when the server says so
    param: str | None = None


@dataclass(frozen=True)
class Other:
    type: str


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | ResponseCreated
    | OutputItemAdded
    | FunctionCallArguments
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | InputTranscript
    | ResponseDone
    | ServerError
    | Other
)


def parse_server_event(message: str | bytes) -> ServerEvent:
    """Parse one server text frame. Raises ``RealtimeProtocolError`` if it does not fit."""
    try:
        data = orjson.loads(message)
    except ValueError as exc:  # orjson.JSONDecodeError: bad JSON, bad UTF-8, nested too deep
        raise RealtimeProtocolError(f"server event is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RealtimeProtocolError("server event is not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise RealtimeProtocolError("server event has no type")
    try:
        return _parse(kind, data)
    except _Missing as exc:
        raise RealtimeProtocolError(f"{kind}: {exc}") from None


class _Missing(Exception):
    pass


def _parse(kind: str, d: dict[str, Any]) -> ServerEvent:
    match kind:
        case "response.output_audio.delta":
            return AudioDelta(
                _str(d, "response_id"),
                _str(d, "item_id"),
                _int(d, "content_index"),
                _b64(d, "delta"),
            )
        case "response.output_audio_transcript.delta":
            return TranscriptDelta(_str(d, "item_id"), _str(d, "delta"))
        case "input_audio_buffer.speech_started":
            return SpeechStarted(_int(d, "audio_start_ms"), _str(d, "item_id"))
        case "input_audio_buffer.speech_stopped":
            return SpeechStopped(_int(d, "audio_end_ms"), _str(d, "item_id"))
        case "response.created":
            return ResponseCreated(_str(_obj(d, "response"), "id"))
        case "response.output_item.added":
            item = _obj(d, "item")
            role = item.get("role")
            return OutputItemAdded(
                _str(d, "response_id"),
                _str(item, "id"),
                role if isinstance(role, str) else None,
                _str(item, "type"),
                _opt_str(item, "name"),
                _opt_str(item, "call_id"),
            )
        case "response.function_call_arguments.done":
            return FunctionCallArguments(
                _str(d, "response_id"), _str(d, "item_id"), _str(d, "call_id"), _str(d, "arguments")
            )
        case "response.output_audio.done":
            return AudioDone(_str(d, "response_id"), _str(d, "item_id"), _int(d, "content_index"))
        case "response.output_audio_transcript.done":
            return TranscriptDone(_str(d, "item_id"), _str(d, "transcript"))
        case "conversation.item.input_audio_transcription.completed":
            return InputTranscript(_str(d, "item_id"), _str(d, "transcript"))
        case "response.done":
            response = _obj(d, "response")
            usage = response.get("usage")
            return ResponseDone(
                _str(response, "id"),
                _str(response, "status"),
                usage if isinstance(usage, dict) else {},
            )
        case "error":
            error = _obj(d, "error")
            return ServerError(
                _str(error, "type"),
                _opt_str(error, "code"),
                _str(error, "message"),
                _opt_str(error, "event_id"),
                _opt_str(error, "param"),
            )
        case "session.created":
            return SessionCreated(_obj(d, "session"))
        case "session.updated":
            return SessionUpdated(_obj(d, "session"))
        case _:
            return Other(kind)


def _str(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise _Missing(f"{key!r} missing or not a string")
    return value


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise _Missing(f"{key!r} is not a string")
    return value


def _int(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Missing(f"{key!r} missing or not an integer")
    return value


def _obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    if not isinstance(value, dict):
        raise _Missing(f"{key!r} missing or not an object")
    return value


def _b64(d: dict[str, Any], key: str) -> bytes:
    value = _str(d, key)
    try:
        return b64.decode(value)
    except ValueError as exc:  # binascii.Error, non-ASCII text included
        raise _Missing(f"{key!r} is not valid base64 ({exc})") from None
