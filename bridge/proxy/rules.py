"""What a raw Realtime proxy client may do on the bridge's key. Pure: the clock is an argument.

* ``CLIENT_EVENTS``: the client event types that pass (audio, session settings,
  conversation items, response create/cancel, truncate); anything else is refused;
* :func:`restrict_session`: of a GA session update, only what the agent lets clients set
  (``Agent.realtime_client_may_set``: ``voice``, ``turn_detection``, ``transcription``,
  ``modalities`` by default; ``instructions`` and ``tools`` only when listed), plus the
  audio formats and noise reduction, which cost nothing; the rest is removed and named;
* :class:`RateCap`: a token bucket of messages per second for one session.

:class:`Refusal` carries the ``code`` and ``message`` a ``realtime-error`` sends back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

CLIENT_EVENTS = frozenset(
    {
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "session.update",
        "session.create",
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
    }
)
# Session paths (GA shape) each permission opens; ``None``: open to every client.
_PATHS: dict[tuple[str, ...], str | None] = {
    ("type",): None,
    ("audio", "input", "format"): None,
    ("audio", "output", "format"): None,
    ("audio", "input", "noise_reduction"): None,
    ("audio", "output", "voice"): "voice",
    ("audio", "output", "speed"): "voice",
    ("audio", "input", "turn_detection"): "turn_detection",
    ("audio", "input", "transcription"): "transcription",
    ("output_modalities",): "modalities",
    ("instructions",): "instructions",
    ("tools",): "tools",
    ("tool_choice",): "tools",
}
# ``response.create`` parameters that change what the model is told.
_RESPONSE_GUARDED = {"instructions": "instructions", "tools": "tools", "tool_choice": "tools"}


class Refusal(Exception):
    """A client event the proxy will not forward."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def payload(self, event_type: object = None) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if isinstance(event_type, str):
            out["event_type"] = event_type[:100]
        return out


def check_event_type(event: object) -> str:
    """The event's type if it is on the allow-list; else ``Refusal``."""
    if not isinstance(event, dict):
        raise Refusal("invalid_event", "a realtime-message must be a JSON object with a 'type'")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise Refusal("invalid_event", "a realtime-message needs a string 'type'")
    if kind not in CLIENT_EVENTS:
        raise Refusal(
            "event_not_allowed",
            f"{kind[:100]!r} is not allowed through this proxy; allowed: "
            + ", ".join(sorted(CLIENT_EVENTS)),
        )
    return kind


def restrict_session(
    session: dict[str, Any], may_set: tuple[str, ...]
) -> tuple[dict[str, Any], list[str]]:
    """The part of a GA session config a client may set, and the fields removed."""
    kept: dict[str, Any] = {}
    removed: list[str] = []
    try:
        _walk(session, (), kept, removed, set(may_set))
    except RecursionError:  # copying JSON nested hundreds deep
        raise Refusal("invalid_event", "the session is nested too deeply") from None
    return kept, removed


def _walk(
    value: dict[str, Any],
    path: tuple[str, ...],
    kept: dict[str, Any],
    removed: list[str],
    may: set[str],
) -> None:
    for key, sub in value.items():
        here = (*path, key)
        if here in _PATHS:
            need = _PATHS[here]
            if need is None or need in may:
                kept[key] = copy.deepcopy(sub)
            else:
                removed.append(".".join(here))
        elif isinstance(sub, dict) and any(p[: len(here)] == here for p in _PATHS):
            inner: dict[str, Any] = {}
            _walk(sub, here, inner, removed, may)
            if inner:
                kept[key] = inner
        else:
            removed.append(".".join(here))


def check_response(params: dict[str, Any], may_set: tuple[str, ...]) -> None:
    """Refuse a ``response.create`` that sets what the agent keeps to itself."""
    for key, need in _RESPONSE_GUARDED.items():
        if key in params and need not in may_set:
            raise Refusal(
                "field_not_allowed",
                f"response.{key} may not be set by clients of this agent",
            )


@dataclass
class RateCap:
    """At most ``per_s`` messages a second on average, ``burst`` at once."""

    per_s: float
    burst: float
    _tokens: float = field(init=False)
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._tokens = self.burst

    def allow(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
