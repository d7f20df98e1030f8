"""The configuration of a local-agent session, as the Realtime service keeps it. Pure.

Owns the effective session configuration: the GA defaults ``session.created`` reports, the
rules a realtime ``session.update`` must pass before anything is applied (known keys,
audio formats: ``audio/pcm`` at 24 kHz or ``audio/pcmu``, chosen for each direction on its
own; turn detection, voice, modalities), with the ``code``, ``message`` and
``param`` the service answers each with, and how an accepted update merges into the
configuration (only the fields present change; a new turn detection or format starts from
its defaults). The client-event rules it builds on: ``bridge.local_agent.checks``.
"""

from __future__ import annotations

import copy
from typing import Any

from bridge.local_agent.checks import Problem, invalid_type, quoted_list

# The voices the service accepts, kept here on purpose rather than imported from the bridge's
# config: the double must catch a wrong voice the bridge lets through.
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)

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
PCMU: dict[str, Any] = {"type": "audio/pcmu"}  # G.711 μ-law, 8 kHz (bridge.local_agent.codec)

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
            f"Invalid value: '{voice}'. Supported values are: {quoted_list(sorted(VOICES))}.",
            "session.audio.output.voice",
        )
    if "instructions" in session and not isinstance(session["instructions"], str):
        return invalid_type("session.instructions", "string", session["instructions"])
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
            return invalid_type(where, "object", sub)
        problem = _unknown_keys(sub, schema[key], where)
        if problem:
            return problem
    return None


def _check_format(fmt: dict[str, Any], where: str) -> Problem | None:
    kind = fmt.get("type", "audio/pcm")
    if kind == "audio/pcma":
        return Problem(
            "invalid_value",
            "The local agent speaks 'audio/pcm' (24000 Hz) and 'audio/pcmu' only; "
            "'audio/pcma' is not supported here.",
            f"{where}.type",
        )
    if kind == "audio/pcmu":
        # G.711 μ-law is 8 kHz by definition: the GA format object has no rate field.
        if "rate" in fmt:
            return Problem(
                "unknown_parameter", f"Unknown parameter: '{where}.rate'.", f"{where}.rate"
            )
        return None
    if kind != "audio/pcm":
        return Problem(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: "
            "'audio/pcm', 'audio/pcmu', and 'audio/pcma'.",
            f"{where}.type",
        )
    rate = fmt.get("rate", 24000)
    if not isinstance(rate, int) or isinstance(rate, bool):
        return invalid_type(f"{where}.rate", "integer", rate)
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
            return invalid_type(f"{where}.{key}", "boolean", value)
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
                value = dict(PCMU) if value.get("type") == PCMU["type"] else {**PCM, **value}
            merged["audio"][side][key] = copy.deepcopy(value)
    return merged
