"""What the local agent accepts from a client, checked the way the Realtime service does.

Owns the shape rules for client events (known names, required fields and their types,
unknown parameters, ``response.create`` parameters) and the problems an event can meet
in the session's state (truncating past the audio sent, committing too little audio, an
unknown item, a second response). Each rule returns a :class:`Problem` carrying the error
``code``, ``message`` and ``param`` the service uses for it (wording taken from errors the
GA service sends), or ``None``. Pure functions. ``session.update`` and the configuration
it produces: ``bridge.local_agent.session_config``; the session state:
``bridge.local_agent.session``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


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
# The parameters ``response.create`` may carry in its ``response`` object.
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


def quoted_list(values: list[str]) -> str:
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
            f"Invalid value: '{kind}'. Supported values are: {quoted_list(list(CLIENT_EVENTS))}.",
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
            return invalid_type(key, expected, event[key])
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


def invalid_type(param: str, expected: str, value: Any) -> Problem:
    article = "an" if expected[0] in "aeiou" else "a"
    return Problem(
        "invalid_type",
        f"Invalid type for '{param}': expected {article} "
        f"{expected}, but got {_type_name(value)} instead.",
        param,
    )


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
        f"Invalid value: '{kind}'. Supported values are: {quoted_list(list(ITEM_TYPES))}.",
        "item.type",
    )


def already_responding(response_id: str) -> Problem:
    return Problem(
        "conversation_already_has_active_response",
        "Conversation already has an "
        f"active response in progress: {response_id}. Wait until the response is "
        "finished before creating a new one.",
    )


def unknown_response_key(key: str) -> Problem:
    return Problem("unknown_parameter", f"Unknown parameter: 'response.{key}'.", f"response.{key}")


def item_exists(item_id: str) -> Problem:
    return Problem("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
