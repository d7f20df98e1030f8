"""Realtime beta ⇄ GA translation for the raw Realtime proxy. Pure: no sockets, no clock.

Most Socket.IO Realtime clients were written for the **beta** protocol, which the
service no longer accepts. The proxy speaks GA to the model and translates for them:

* client → model (:func:`client_to_ga`): ``session.create`` (a name some clients use)
  and ``session.update`` with the flat beta session (``modalities``,
  ``input_audio_format``, ``output_audio_format``, ``input_audio_transcription``,
  ``turn_detection``, ``voice``, …) become a GA ``session.update`` (``type: realtime``,
  ``output_modalities``, ``audio.input`` / ``audio.output``); ``response.create``
  parameters likewise; assistant content parts ``text`` / ``audio`` become
  ``output_text`` / ``output_audio``;
* model → client (:func:`server_to_beta`): GA event names back to beta ones (table
  ``SERVER_RENAMES``), sessions and responses back to the flat beta shape, content parts
  back to ``text`` / ``audio``; ``conversation.item.done`` (no beta equivalent: the item
  already came as ``conversation.item.created``) is dropped. The model is a remote peer:
  this direction never raises, and a field of a shape it does not know passes as it came.

A GA client needs none of this: :func:`detect_protocol` tells from its first session
event, or the connect option ``protocol`` says so.

Beta shapes: https://platform.openai.com/docs/api-reference/realtime (beta, as archived
in the ``openai`` package's ``types.beta.realtime``); GA: ``types.realtime``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

Protocol = Literal["beta", "ga"]

# GA server event → the beta name a client expects.
SERVER_RENAMES: dict[str, str] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
# GA server events a beta client never saw.
BETA_DROPPED = frozenset({"conversation.item.done"})

# Beta audio format names ⇄ GA format objects.
_FORMATS: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
_FORMAT_NAMES = {fmt["type"]: name for name, fmt in _FORMATS.items()}
# Beta content part types ⇄ GA (user parts keep their names).
_PART_TO_GA = {"text": "output_text", "audio": "output_audio"}
_PART_TO_BETA = {v: k for k, v in _PART_TO_GA.items()}
# Beta session keys GA has no room for; dropped (the bridge picks the model; GA sessions
# have no temperature; the rest are read-only fields a client echoes back).
_BETA_IGNORED = frozenset(
    {
        "temperature",
        "model",
        "object",
        "id",
        "expires_at",
        "client_secret",
    }
)
# Keys that only a beta session (or response) has: their presence means "beta".
_BETA_ONLY = frozenset(
    {
        "modalities",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "turn_detection",
        "input_audio_noise_reduction",
        "max_response_output_tokens",
        "temperature",
    }
)


class TranslationError(ValueError):
    """A client event that cannot be translated; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def detect_protocol(event: dict[str, Any]) -> Protocol | None:
    """What a client speaks, told by one of its events (None: this one does not say)."""
    kind = event.get("type")
    if kind == "session.create":
        return "beta"
    if kind == "session.update" and isinstance(event.get("session"), dict):
        session = event["session"]
        if "type" in session or "audio" in session or "output_modalities" in session:
            return "ga"
        if _BETA_ONLY & set(session):
            return "beta"
    return None


# ---------------------------------------------------------------------- client → model


def client_to_ga(event: dict[str, Any]) -> dict[str, Any]:
    """A beta client event as the GA event the model takes (a new dict)."""
    kind = event.get("type")
    out = {k: v for k, v in event.items() if k != "session"}
    try:
        if kind in ("session.create", "session.update"):
            session = event.get("session", {})
            if not isinstance(session, dict):
                raise TranslationError("invalid_type", f"{kind}: 'session' must be an object")
            out["type"] = "session.update"
            out["session"] = session_to_ga(session)
        elif kind == "response.create" and isinstance(event.get("response"), dict):
            out["response"] = response_to_ga(event["response"])
        elif kind == "conversation.item.create" and isinstance(event.get("item"), dict):
            out["item"] = _item(event["item"], _PART_TO_GA)
    except RecursionError:  # copying JSON nested hundreds deep
        raise TranslationError("invalid_value", f"{kind}: nested too deeply") from None
    return out


def session_to_ga(beta: dict[str, Any]) -> dict[str, Any]:
    """A flat beta session config as a GA realtime session config."""
    out: dict[str, Any] = {"type": "realtime"}
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    for key, value in beta.items():
        match key:
            case "modalities":
                out["output_modalities"] = _modalities(value)
            case "instructions" | "tools" | "tool_choice" | "tracing" | "truncation" | "prompt":
                out[key] = copy.deepcopy(value)
            case "max_response_output_tokens":
                out["max_output_tokens"] = value
            case "voice":
                audio_out["voice"] = value
            case "speed":
                audio_out["speed"] = value
            case "input_audio_format":
                audio_in["format"] = _format(value, key)
            case "output_audio_format":
                audio_out["format"] = _format(value, key)
            case "input_audio_transcription":
                audio_in["transcription"] = copy.deepcopy(value)
            case "input_audio_noise_reduction":
                audio_in["noise_reduction"] = copy.deepcopy(value)
            case "turn_detection":
                audio_in["turn_detection"] = copy.deepcopy(value)
            case _ if key in _BETA_IGNORED:
                pass
            case _:
                raise TranslationError("unknown_parameter", f"Unknown parameter: 'session.{key}'.")
    if audio_in or audio_out:
        out["audio"] = {
            **({"input": audio_in} if audio_in else {}),
            **({"output": audio_out} if audio_out else {}),
        }
    return out


def response_to_ga(beta: dict[str, Any]) -> dict[str, Any]:
    """Beta ``response.create`` parameters as GA ones."""
    out: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    for key, value in beta.items():
        match key:
            case "modalities":
                out["output_modalities"] = _modalities(value)
            case "voice":
                audio_out["voice"] = value
            case "output_audio_format":
                audio_out["format"] = _format(value, key)
            case "max_response_output_tokens" | "max_output_tokens":
                out["max_output_tokens"] = value
            case "temperature":
                pass
            case "input":
                if not isinstance(value, list):
                    raise TranslationError("invalid_type", "'response.input' must be a list")
                out["input"] = [_item(i, _PART_TO_GA) if isinstance(i, dict) else i for i in value]
            case _:
                out[key] = copy.deepcopy(value)
    if audio_out:
        out["audio"] = {"output": audio_out}
    return out


def _modalities(value: object) -> list[str]:
    # GA takes one output modality; audio comes with its transcript (the beta "text").
    if not isinstance(value, list) or not value:
        raise TranslationError("invalid_type", "'modalities' must be a non-empty list")
    return ["audio"] if "audio" in value else ["text"]


def _format(value: object, key: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return copy.deepcopy(value)  # already GA-shaped
    if not isinstance(value, str) or value not in _FORMATS:
        raise TranslationError(
            "invalid_value", f"'{key}' must be one of {', '.join(sorted(_FORMATS))}"
        )
    return dict(_FORMATS[value])


def _item(item: dict[str, Any], parts: dict[str, str]) -> dict[str, Any]:
    content = item.get("content")
    if item.get("role") != "assistant" or not isinstance(content, list):
        return item
    return {**item, "content": [_part(p, parts) for p in content]}


def _part(part: object, parts: dict[str, str]) -> object:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return part
    return {**part, "type": parts.get(part["type"], part["type"])}


# ---------------------------------------------------------------------- model → client


def server_to_beta(event: dict[str, Any]) -> dict[str, Any] | None:
    """A GA server event as a beta client expects it (None: beta has no such event).

    Never raises: the model is a remote peer, and a field of a shape this does not know
    (or a new one) passes as it came. The event itself is not changed."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return event
    if kind in BETA_DROPPED:
        return None
    out = dict(event)
    out["type"] = SERVER_RENAMES.get(kind, kind)
    if isinstance(out.get("session"), dict):
        out["session"] = session_to_beta(out["session"])
    if isinstance(out.get("item"), dict):
        out["item"] = _item(out["item"], _PART_TO_BETA)
    if isinstance(out.get("part"), dict):
        out["part"] = _part(out["part"], _PART_TO_BETA)
    if isinstance(out.get("response"), dict):
        out["response"] = _response_to_beta(out["response"])
    return out


def session_to_beta(ga: dict[str, Any]) -> dict[str, Any]:
    """A GA session (as ``session.created`` / ``updated`` report it) in the flat beta shape."""
    audio = _obj(ga.get("audio"))
    audio_in, audio_out = _obj(audio.get("input")), _obj(audio.get("output"))
    out: dict[str, Any] = {
        k: v
        for k, v in ga.items()
        if k not in ("type", "audio", "output_modalities", "max_output_tokens")
    }
    if "output_modalities" in ga:
        out["modalities"] = _modalities_to_beta(ga["output_modalities"])
    if "max_output_tokens" in ga:
        out["max_response_output_tokens"] = ga["max_output_tokens"]
    for side, key, beta_key in (
        (audio_in, "format", "input_audio_format"),
        (audio_out, "format", "output_audio_format"),
    ):
        fmt = side.get(key)
        if isinstance(fmt, dict):
            out[beta_key] = _format_name(fmt.get("type"), fmt.get("type"))
    for side, key, beta_key in (
        (audio_in, "transcription", "input_audio_transcription"),
        (audio_in, "turn_detection", "turn_detection"),
        (audio_in, "noise_reduction", "input_audio_noise_reduction"),
        (audio_out, "voice", "voice"),
        (audio_out, "speed", "speed"),
    ):
        if key in side:
            out[beta_key] = side[key]
    return out


def _response_to_beta(ga: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in ga.items() if k not in ("output_modalities", "audio")}
    if "output_modalities" in ga:
        out["modalities"] = _modalities_to_beta(ga["output_modalities"])
    audio_out = _obj(_obj(ga.get("audio")).get("output"))
    if "voice" in audio_out:
        out["voice"] = audio_out["voice"]
    if isinstance(audio_out.get("format"), dict):
        out["output_audio_format"] = _format_name(audio_out["format"].get("type"), "pcm16")
    if isinstance(ga.get("output"), list):
        out["output"] = [
            _item(i, _PART_TO_BETA) if isinstance(i, dict) else i for i in ga["output"]
        ]
    return out


def _obj(value: object) -> dict[str, Any]:
    """A server field read as an object: anything else (null, a list, ...) as none."""
    return value if isinstance(value, dict) else {}


def _modalities_to_beta(value: object) -> object:
    if not isinstance(value, list):
        return value  # not a GA shape: passed as it came
    return ["text", "audio"] if "audio" in value else ["text"]


def _format_name(kind: object, default: object) -> object:
    return _FORMAT_NAMES.get(kind, default) if isinstance(kind, str) else default
