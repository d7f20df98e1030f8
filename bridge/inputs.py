"""What a phone leg may tell a call: the typed leg inputs, sans-I/O.

Every client protocol (Twilio media stream, browser softphone, and the legs still to come)
turns what arrives on its wire into these, in its ``protocol`` module; its shell hands them
to ``CallRunner.feed`` with their arrival time, which is the only thing that applies them
to the ``Call`` (``bridge.runner``). They carry no time, no socket and no wire detail:
audio is already decoded from its transport encoding (base64, binary frames) but still in
the leg's codec and rate, which the Call's uplink transcoder converts.

This module imports nothing: it must not touch the Call, the clock or any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CallerAudio", "Dtmf", "FarEndMark", "HangUp", "Interrupt", "LegInput", "TextInput"]


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Caller audio in the leg's format (μ-law 8 kHz for Twilio, PCM16LE for the softphone),
    and where it starts in the leg's own stream when the leg says (Twilio's media
    ``timestamp``, ms): a recording places it there, not by when it arrived."""

    payload: bytes
    stream_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FarEndMark:
    """The far end played (or, after a clear, dropped) everything up to mark ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class TextInput:
    """Typed user input: a user message, then a response."""

    text: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The client asked to stop the agent's speech now (a client-side barge-in)."""


@dataclass(frozen=True, slots=True)
class HangUp:
    """The caller's side ended the call; ``reason`` is the call's end reason."""

    reason: str


LegInput = CallerAudio | FarEndMark | Dtmf | TextInput | Interrupt | HangUp
