"""The companion JSON protocol, sans-I/O: client messages, server messages, session options.

Owns the wire shape of ``/ws/companion`` and the rules that turn a client's wishes into
an agent: personality traits into instructions, the client's voice names into Realtime
voices, speed into the model's output speed, volume into a gain. It never touches
sockets, the Call or the clock.

Every message is a text frame ``{"type": …, "data": {…}}``.

Client → server::

    auth            {userId, conversationId}
    start_realtime  {personalityTraits: {playfulness, empathy, humor, intelligence,
                     supportiveness} (0-100 each), voiceSettings: {voice, speed, pitch, volume}}
    audio           {audio: base64 PCM16LE mono 24 kHz}
    text            {text}

Server → client::

    session_ready      {sessionId, model, voice}
    speech_started     {itemId, audioStartMs}      the user started speaking: stop playback
    audio_delta        {responseId, itemId, audioData}   base64 PCM16LE mono 24 kHz
    transcription      {itemId, transcript}        the user's words
    response_complete  {responseId, status, usage}
    error              {error: "…"}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bridge import b64
from bridge.agents import VOICES, Agent
from bridge.errors import PhoneProtocolError

RATE = 24000
TRAITS = ("playfulness", "empathy", "humor", "intelligence", "supportiveness")
MAX_ID_CHARS = 200
MAX_TEXT_CHARS = 4000
# The Realtime API's output speed range (session.audio.output.speed).
SPEED_MIN, SPEED_MAX = 0.25, 1.5
VOLUME_MAX = 2.0
# Voices of the speech endpoint that the Realtime API lacks, and the Realtime voice used.
VOICE_ALIASES = {"fable": "ballad", "nova": "coral", "onyx": "ash"}

# What each trait adds to the instructions, by level: low (< 34), high (> 66); the middle
# adds nothing.
TRAIT_WORDS: dict[str, tuple[str, str]] = {
    "playfulness": ("Keep a calm, serious tone.", "Be playful and lighthearted."),
    "empathy": (
        "Stay matter-of-fact about feelings.",
        "Be warm and empathetic; acknowledge how the user feels.",
    ),
    "humor": ("Do not joke.", "Use gentle humour where it fits."),
    "intelligence": (
        "Use simple words and short sentences.",
        "Give thoughtful, precise, well-reasoned answers.",
    ),
    "supportiveness": (
        "Be direct; do not over-praise.",
        "Be encouraging and supportive.",
    ),
}


class CompanionError(PhoneProtocolError):
    """A message the bridge will not act on; the text goes to the client as ``error``."""


# ---------------------------------------------------------------------- client messages


@dataclass(frozen=True)
class Auth:
    user_id: str
    conversation_id: str


@dataclass(frozen=True)
class VoiceSettings:
    voice: str  # a Realtime voice
    speed: float  # within SPEED_MIN..SPEED_MAX
    volume: float  # gain applied by the bridge
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartRealtime:
    traits: dict[str, int]
    voice: VoiceSettings


@dataclass(frozen=True)
class AudioIn:
    pcm: bytes


@dataclass(frozen=True)
class TextIn:
    text: str


ClientMessage = Auth | StartRealtime | AudioIn | TextIn


def parse_message(raw: str, *, max_bytes: int, default_voice: str) -> ClientMessage:
    """One text frame → a typed message, or ``CompanionError`` saying what is wrong."""
    if len(raw) > max_bytes * 4 // 3 + 1024:
        raise CompanionError(f"message too large (limit {max_bytes * 4 // 3 + 1024} characters)")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        raise CompanionError("message is not valid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise CompanionError('a message is {"type": "…", "data": {…}}')
    kind = message["type"]
    data = message.get("data", {})
    if not isinstance(data, dict):
        raise CompanionError(f"{kind[:40]}: data must be an object")
    match kind:
        case "auth":
            return Auth(_ident(data, "userId"), _ident(data, "conversationId"))
        case "start_realtime":
            return StartRealtime(
                parse_traits(data.get("personalityTraits", {})),
                parse_voice_settings(data.get("voiceSettings", {}), default_voice),
            )
        case "audio":
            return AudioIn(_audio(data.get("audio"), max_bytes))
        case "text":
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                raise CompanionError('text needs {"text": "…"}, not empty')
            if len(text) > MAX_TEXT_CHARS:
                raise CompanionError(f"text is limited to {MAX_TEXT_CHARS} characters")
            return TextIn(text.strip())
        case _:
            raise CompanionError(f"unknown message type {kind[:40]!r}")


def _ident(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        raise CompanionError(f"auth needs {key}: a non-empty string of at most {MAX_ID_CHARS}")
    return value.strip()


def _audio(payload: object, max_bytes: int) -> bytes:
    if not isinstance(payload, str):
        raise CompanionError('audio needs {"audio": base64 PCM16 24 kHz}')
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise CompanionError(f"audio is limited to {max_bytes} bytes a message")
    try:
        pcm = b64.decode(payload)
    except ValueError:
        raise CompanionError("audio is not valid base64") from None
    if not pcm or len(pcm) % 2:
        raise CompanionError("audio must be PCM16: a whole, non-zero number of samples")
    return pcm


def parse_traits(raw: object) -> dict[str, int]:
    """Traits 0-100 (50 when not given); a value outside the range is refused."""
    if not isinstance(raw, dict):
        raise CompanionError("personalityTraits must be an object")
    traits: dict[str, int] = {}
    for name in TRAITS:
        value = raw.get(name, 50)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= 100  # before isfinite: a huge int overflows a float
            or not math.isfinite(value)
        ):
            raise CompanionError(f"personalityTraits.{name} must be a number from 0 to 100")
        traits[name] = round(value)
    return traits


def parse_voice_settings(raw: object, default_voice: str) -> VoiceSettings:
    """The Realtime voice, speed (clamped, with a warning) and volume; pitch refused."""
    if not isinstance(raw, dict):
        raise CompanionError("voiceSettings must be an object")
    warnings: list[str] = []
    name = raw.get("voice") or default_voice
    if not isinstance(name, str):
        raise CompanionError("voiceSettings.voice must be a string")
    voice = VOICE_ALIASES.get(name.lower(), name.lower())
    if voice not in VOICES:
        choices = ", ".join(sorted(VOICES | VOICE_ALIASES.keys()))
        raise CompanionError(f"unknown voice {name[:40]!r}; choose one of {choices}")
    if voice != name.lower():
        warnings.append(f"voice {name!r} is spoken by the Realtime voice {voice!r}")
    speed = _number(raw, "speed", 1.0)
    if not SPEED_MIN <= speed <= SPEED_MAX:
        clamped = min(max(speed, SPEED_MIN), SPEED_MAX)
        warnings.append(f"speed {speed:g} is outside {SPEED_MIN}-{SPEED_MAX}; using {clamped:g}")
        speed = clamped
    # The Realtime API has no pitch control, and shifting pitch in the bridge would
    # colour every voice: only the neutral value is accepted.
    pitch = _number(raw, "pitch", 1.0)
    if pitch != 1.0:
        raise CompanionError("voiceSettings.pitch is not supported: send 1.0 or leave it out")
    volume = _number(raw, "volume", 1.0)
    if not 0 <= volume <= VOLUME_MAX:
        raise CompanionError(f"voiceSettings.volume must be from 0 to {VOLUME_MAX:g}")
    return VoiceSettings(voice, speed, volume, tuple(warnings))


def _number(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -1e9 < value < 1e9  # also keeps a huge int from overflowing float()
    ):
        raise CompanionError(f"voiceSettings.{key} must be a number")
    return float(value)


# ---------------------------------------------------------------------- the agent


def personality(traits: dict[str, int]) -> str:
    """The instructions' personality paragraph (``TRAIT_WORDS``, by level)."""
    words = []
    for name in TRAITS:
        low, high = TRAIT_WORDS[name]
        level = traits.get(name, 50)
        if level < 34:
            words.append(low)
        elif level > 66:
            words.append(high)
    return " ".join(words)


def companion_agent(base: Agent, start: StartRealtime) -> Agent:
    """``base`` with this session's personality, voice and speed; no greeting (the client
    speaks first)."""
    extra = personality(start.traits)
    instructions = f"{base.instructions}\n\n{extra}" if extra else base.instructions
    return replace(
        base,
        instructions=instructions,
        voice=start.voice.voice,
        speed=start.voice.speed,
        greeting="",
    )


def apply_gain(pcm: bytes, gain: float) -> bytes:
    """PCM16LE scaled by ``gain``, clipped (volume applied by the bridge)."""
    if gain == 1.0:
        return pcm
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) * gain
    scaled: bytes = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return scaled


# ---------------------------------------------------------------------- server messages


def message(kind: str, **data: Any) -> str:
    return json.dumps({"type": kind, "data": data}, separators=(",", ":"))


def error(text: str) -> str:
    return message("error", error=text)


def audio_delta(pcm: bytes, response_id: str | None, item_id: str | None) -> str:
    return message(
        "audio_delta",
        responseId=response_id,
        itemId=item_id,
        audioData=b64.encode(pcm),
    )
