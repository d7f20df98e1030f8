"""The raw PCM voice protocol, sans-I/O: connect options, client frames, server events.

Owns what goes over ``/ws/voice`` (and ``/``) and nothing else: no sockets, no Call, no
clock of its own (callers pass ``now``).

Client → server: **binary** frames of PCM16 LE mono at the session's rate (16 kHz unless
``?rate=8000|24000|48000``), any length up to ``MAX_MESSAGE_BYTES``, a whole number of
samples. Text frames are not part of the protocol: each one gets an ``error`` event.

Server → client: **binary** frames of the agent's PCM16 at the same rate, paced at real
time, and **text** JSON events::

    {"type": "event", "name": "AIConnected", "sessionId": "…"}  the model session is up
    {"type": "event", "name": "AISpeechDetected"}               caller speech (model VAD)
    {"type": "event", "name": "AISpeechEnded"}
    {"type": "event", "name": "AIResponseStart"}
    {"type": "textDelta", "text": "…"}                          the agent's words as they come
    {"type": "event", "name": "AIResponseEnd", "finalText": "…"}
    {"type": "error", "message": "…"}                           a dropped frame, and why

Connect options (query string): ``rate``, ``agentId`` and ``token`` (or an
``Authorization: Bearer`` header).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.softphone.protocol import Refused

__all__ = [
    "DEFAULT_RATE",
    "RATES",
    "AudioBudget",
    "AudioIn",
    "Params",
    "error",
    "event",
    "parse_frame",
    "parse_options",
    "text_delta",
]

RATES = (8000, 16000, 24000, 48000)
DEFAULT_RATE = 16000
# Audio may arrive faster than real time in bursts (a client catching up), not for long.
BURST_S = 2.0
MAX_SPEEDUP = 2.0


@dataclass(frozen=True)
class Params:
    agent: Agent
    rate: int
    token: str


def parse_options(query_string: str, settings: Settings) -> Params:
    """The session's agent and rate, and the token given in the URL ("" when none)."""
    query = parse_qs(query_string or "", keep_blank_values=False)

    def one(key: str) -> str:
        values = query.get(key)
        return values[0] if values else ""

    raw_rate = one("rate") or str(DEFAULT_RATE)
    rate = int(raw_rate) if raw_rate.isascii() and raw_rate.isdigit() and len(raw_rate) < 7 else 0
    if rate not in RATES:
        raise Refused("bad_rate", f"rate must be one of {', '.join(map(str, RATES))}")
    name = one("agentId") or settings.default_agent
    agent = settings.agent(name)
    if agent is None:
        raise Refused("unknown_agent", f"there is no agent named {name[:64]!r}")
    return Params(agent, rate, one("token"))


@dataclass(frozen=True)
class AudioIn:
    pcm: bytes


def parse_frame(message: Mapping[str, Any], max_bytes: int) -> AudioIn:
    """One ASGI ``websocket.receive`` message → caller audio, or ``PhoneProtocolError``."""
    data = message.get("bytes")
    if data is None:
        raise PhoneProtocolError(
            "text frames are not accepted here: send the audio as binary PCM16 LE mono"
        )
    if len(data) > max_bytes:
        raise PhoneProtocolError(f"audio frame of {len(data)} bytes is over {max_bytes}")
    if not data or len(data) % 2:
        raise PhoneProtocolError("PCM16 needs a whole, non-zero number of 2-byte samples")
    return AudioIn(bytes(data))


class AudioBudget:
    """How much audio a client may send: ``MAX_SPEEDUP`` times real time, with a burst of
    ``BURST_S`` seconds. A flood past it is dropped, not queued."""

    def __init__(self, rate: int, now: float) -> None:
        self.per_s = rate * 2 * MAX_SPEEDUP
        self.cap = rate * 2 * BURST_S
        self.left = self.cap
        self.at = now

    def take(self, n: int, now: float) -> bool:
        self.left = min(self.cap, self.left + (now - self.at) * self.per_s)
        self.at = now
        if n > self.left:
            return False
        self.left -= n
        return True


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def event(name: str, **fields: Any) -> str:
    return _dumps({"type": "event", "name": name, **fields})


def text_delta(text: str) -> str:
    return _dumps({"type": "textDelta", "text": text})


def error(message: str) -> str:
    return _dumps({"type": "error", "message": message})
