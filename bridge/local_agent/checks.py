"""What the local agent accepts from a client, checked the way the Realtime service does.

Owns the shape rules for client events and ``session.update`` (known names, required
fields and their types, unknown parameters, audio formats, turn detection) and the session
configuration they produce. Each rule returns a :class:`Problem` carrying the error
``code``, ``message`` and ``param`` the service uses for it (wording taken from errors the
GA service sends), or ``None``. Pure functions; the session state lives in
``bridge.local_agent.session``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

# The voices the service accepts, kept here on purpose rather than imported from the bridge's
# config: the double must catch a wrong voice the bridge lets through.
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    param: str | None = None
    type: str = "invalid_request_error"


_STR, _INT, _OBJ = "string", "integer", "object"
_PY_TYPES: dict[str, type] = {_STR: str, _INT: int, _OBJ: dict}

# Client events the local agent handles: required and optional fields with their types.
CLIENT_EVENTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "session.update": ({"session": _OBJ}, {}),
    "input_audio_buffer.append": ({"audio": _STR}, {}),
    "input_audio_buffer.commit": ({}, {}),
    "input_audio_buffer.clear": ({}, {}),
    "conversation.item.create": ({"item": _OBJ}, {"previous_item_id": _STR}),
    "conversation.item.truncate": (
        {"item_id": _STR, "content_index": _INT, "audio_end_ms": _INT},
        {},
    ),
    "conversation.item.delete": ({"item_id": _STR}, {}),
    "conversation.item.retrieve": ({"item_id": _STR}, {}),
    "response.create": ({}, {"response": _OBJ}),
    "response.cancel": ({}, {"response_id": _STR}),
}


def _quoted_list(values: list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return (
        ", ".join(quoted[:-1]) + ", and " + quoted[-1] if len(quoted) > 2 else " and ".join(quoted)
    )


def check_client_event(event: dict[str, Any]) -> Problem | None:
    """Known type, required fields present, field types right, nothing unknown."""
    kind = event.get("type")
    if kind is None:
        return Problem("missing_required_parameter", "Missing required parameter: 'type'.", "type")
    if not isinstance(kind, str) or kind not in CLIENT_EVENTS:
        return Problem(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: {_quoted_list(list(CLIENT_EVENTS))}.",
            "type",
        )
    required, optional = CLIENT_EVENTS[kind]
    allowed = {"type", "event_id", *required, *optional}
    for key in event:
        if key not in allowed:
            return Problem("unknown_parameter", f"Unknown parameter: '{key}'.", key)
    for key in required:
        if key not in event:
            return Problem(
                "missing_required_parameter", f"Missing required parameter: '{key}'.", key
            )
    fields = {"event_id": _STR, **required, **optional}
    for key, expected in fields.items():
        if key in event and not _is(event[key], expected):
            if event[key] is None and (key == "event_id" or key in optional):
                continue
            return _invalid_type(key, expected, event[key])
    return None


def _is(value: Any, expected: str) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES[expected])


def _type_name(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a decimal"
        case str():
            return "a string"
        case list():
            return "an array"
        case _:
            return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> Problem:
    article = "an" if expected[0] in "aeiou" else "a"
    return Problem(
        "invalid_type",
        f"Invalid type for '{param}': expected {article} "
        f"{expected}, but got {_type_name(value)} instead.",
        param,
    )


# --------------------------------------------------------------------------- session

SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
PCM: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}

_ANY: None = None
_FORMAT = {"type": _ANY, "rate": _ANY}
_TURN = dict.fromkeys({*SERVER_VAD_DEFAULTS, *SEMANTIC_VAD_DEFAULTS})
_SCHEMA: dict[str, Any] = {
    **dict.fromkeys(
        [
            "type",
            "instructions",
            "output_modalities",
            "model",
            "max_output_tokens",
            "tools",
            "tool_choice",
            "tracing",
            "truncation",
            "prompt",
            "include",
        ]
    ),
    "audio": {
        "input": {
            "format": _FORMAT,
            "noise_reduction": _ANY,
            "transcription": _ANY,
            "turn_detection": _TURN,
        },
        "output": {"format": _FORMAT, "voice": _ANY, "speed": _ANY},
    },
}
_NULLABLE = {"session.audio.input.turn_detection"}
RESPONSE_KEYS = frozenset(
    {
        "audio",
        "conversation",
        "input",
        "instructions",
        "max_output_tokens",
        "metadata",
        "output_modalities",
        "prompt",
        "tool_choice",
        "tools",
    }
)


def default_session(session_id: str, model: str) -> dict[str, Any]:
    """The effective configuration of a new session (GA defaults, as ``session.created``)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful voice assistant. (Local echo agent.)",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD_DEFAULTS),
            },
            "output": {"format": dict(PCM), "voice": "marin", "speed": 1.0},
        },
    }


def check_session_update(session: dict[str, Any]) -> Problem | None:
    """Every rule a realtime ``session.update`` must pass before anything is applied."""
    kind = session.get("type")
    if kind is None:
        return Problem(
            "missing_required_parameter",
            "Missing required parameter: 'session.type'.",
            "session.type",
        )
    if kind == "transcription":
        return Problem(
            "invalid_value",
            "Passing a transcription session update event to a realtime session is not allowed.",
            "session.type",
        )
    if kind != "realtime":
        return Problem(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'realtime' and 'transcription'.",
            "session.type",
        )
    problem = _unknown_keys(session, _SCHEMA, "session")
    if problem:
        return problem
    audio = session.get("audio", {})
    for side in ("input", "output"):
        fmt = audio.get(side, {}).get("format")
        if fmt is not None:
            problem = _check_format(fmt, f"session.audio.{side}.format")
            if problem:
                return problem
    turn = audio.get("input", {}).get("turn_detection")
    if turn is not None:
        problem = _check_turn_detection(turn)
        if problem:
            return problem
    voice = audio.get("output", {}).get("voice")
    if (
        voice is not None
        and voice not in VOICES
        and not (isinstance(voice, dict) and isinstance(voice.get("id"), str))
    ):
        return Problem(
            "invalid_value",
            f"Invalid value: '{voice}'. Supported values are: {_quoted_list(sorted(VOICES))}.",
            "session.audio.output.voice",
        )
    if "instructions" in session and not isinstance(session["instructions"], str):
        return _invalid_type("session.instructions", _STR, session["instructions"])
    modalities = session.get("output_modalities")
    if modalities is not None and modalities not in (["audio"], ["text"]):
        return Problem(
            "invalid_value",
            "Invalid 'session.output_modalities': use either ['audio'] or ['text'].",
            "session.output_modalities",
        )
    return None


def _unknown_keys(value: dict[str, Any], schema: dict[str, Any], path: str) -> Problem | None:
    for key, sub in value.items():
        where = f"{path}.{key}"
        if key not in schema:
            return Problem("unknown_parameter", f"Unknown parameter: '{where}'.", where)
        if schema[key] is None:
            continue
        if sub is None and where in _NULLABLE:
            continue
        if not isinstance(sub, dict):
            return _invalid_type(where, _OBJ, sub)
        problem = _unknown_keys(sub, schema[key], where)
        if problem:
            return problem
    return None


def _check_format(fmt: dict[str, Any], where: str) -> Problem | None:
    kind = fmt.get("type", "audio/pcm")
    if kind in ("audio/pcmu", "audio/pcma"):
        return Problem(
            "invalid_value",
            f"The local agent speaks audio/pcm at 24000 Hz only; '{kind}' is not supported here.",
            f"{where}.type",
        )
    if kind != "audio/pcm":
        return Problem(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: "
            "'audio/pcm', 'audio/pcmu', and 'audio/pcma'.",
            f"{where}.type",
        )
    rate = fmt.get("rate", 24000)
    if not isinstance(rate, int) or isinstance(rate, bool):
        return _invalid_type(f"{where}.rate", _INT, rate)
    if rate != 24000:
        below = rate < 24000
        return Problem(
            "integer_below_min_value" if below else "integer_above_max_value",
            f"Invalid '{where}.rate': integer {'below minimum' if below else 'above maximum'} "
            f"value. Expected a value {'>=' if below else '<='} 24000, but got {rate} instead.",
            f"{where}.rate",
        )
    return None


def _check_turn_detection(turn: dict[str, Any]) -> Problem | None:
    where = "session.audio.input.turn_detection"
    kind = turn.get("type")
    if kind not in ("server_vad", "semantic_vad"):
        return Problem(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'.",
            f"{where}.type",
        )
    allowed = SERVER_VAD_DEFAULTS if kind == "server_vad" else SEMANTIC_VAD_DEFAULTS
    for key, value in turn.items():
        if key not in allowed:
            return Problem(
                "unknown_parameter", f"Unknown parameter: '{where}.{key}'.", f"{where}.{key}"
            )
        if key in ("create_response", "interrupt_response") and not isinstance(value, bool):
            return _invalid_type(f"{where}.{key}", "boolean", value)
        if key in ("prefix_padding_ms", "silence_duration_ms") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            return Problem(
                "invalid_value",
                f"Invalid '{where}.{key}': expected a non-negative integer.",
                f"{where}.{key}",
            )
        if key == "threshold" and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
        ):
            return Problem(
                "invalid_value",
                f"Invalid '{where}.threshold': expected a number between 0 and 1.",
                f"{where}.threshold",
            )
    return None


def merge_session(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The effective configuration after a (checked) update: only fields present change."""
    merged = copy.deepcopy(current)
    audio = update.get("audio", {})
    for key, value in update.items():
        if key != "audio":
            merged[key] = copy.deepcopy(value)
    for side in ("input", "output"):
        for key, value in audio.get(side, {}).items():
            if key == "turn_detection" and value is not None:
                base = (
                    SERVER_VAD_DEFAULTS if value["type"] == "server_vad" else SEMANTIC_VAD_DEFAULTS
                )
                value = {**base, **value}
            elif key == "format":
                value = {**PCM, **value}
            merged["audio"][side][key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- frames & state


def parse_frame(
    message: str | bytes | bytearray | memoryview | dict[str, Any],
) -> dict[str, Any] | Problem:
    """One websocket message as a client event object, or why it is not one."""
    if isinstance(message, bytes | bytearray | memoryview):
        return Problem(
            "invalid_event", "Expected a text WebSocket message; binary frames are not supported."
        )
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except ValueError:
            return Problem("invalid_json", "Invalid event: failed to parse JSON value.")
    if not isinstance(message, dict):
        return Problem("invalid_event", "Invalid event: expected a JSON object.")
    return message


def check_truncate(
    role: str | None, item_id: str, content_index: int, audio_end_ms: int, sent_ms: float
) -> Problem | None:
    """``role`` None: no such item; only assistant audio, and only what was sent of it."""
    if role is None:
        return Problem(
            "item_truncate_invalid_item_id",
            f"Error truncating item: the item with id '{item_id}' does not exist.",
            "item_id",
        )
    if role != "assistant":
        return Problem(
            "invalid_value", "Only assistant messages with audio can be truncated.", "item_id"
        )
    if content_index != 0:
        return Problem(
            "invalid_value",
            f"Invalid 'content_index': item '{item_id}' has no "
            f"audio content part at index {content_index}.",
            "content_index",
        )
    if audio_end_ms < 0 or audio_end_ms > sent_ms:
        return Problem(
            "invalid_value",
            f"Audio content of {int(sent_ms)}ms is already shorter than {audio_end_ms}ms",
            "audio_end_ms",
        )
    return None


def commit_empty(ms: float) -> Problem:
    return Problem(
        "input_audio_buffer_commit_empty",
        "Error committing input audio buffer: "
        "buffer too small. Expected at least 100ms of audio, but buffer only has "
        f"{ms:.2f}ms of audio.",
    )


def no_item(doing: str, item_id: str) -> Problem:
    return Problem(
        "invalid_value",
        f"Error {doing} item: the item with id '{item_id}' does not exist.",
        "item_id",
    )


NO_ACTIVE_RESPONSE = Problem(
    "response_cancel_not_active", "Cancellation failed: no active response found"
)
INVALID_AUDIO = Problem(
    "invalid_value", "Invalid 'audio': expected base64-encoded audio bytes.", "audio"
)
ITEM_TYPES = ("message", "function_call", "function_call_output")


def bad_item_type(kind: Any) -> Problem:
    return Problem(
        "invalid_value",
        f"Invalid value: '{kind}'. Supported values are: {_quoted_list(list(ITEM_TYPES))}.",
        "item.type",
    )


def already_responding(response_id: str) -> Problem:
    return Problem(
        "conversation_already_has_active_response",
        "Conversation already has an "
        f"active response in progress: {response_id}. Wait until the response is "
        "finished before creating a new one.",
    )
