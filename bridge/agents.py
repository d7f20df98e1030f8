"""Voice agents: what each one is told, how it sounds, and what it may do.

An ``Agent`` is built from the defaults (``OPENAI_VOICE``, ``AGENT_INSTRUCTIONS``,
``AGENT_GREETING``) or from an agents TOML file (``AGENTS_FILE``) by ``load_agents``; every
key is checked, and a bad one raises ``ConfigError`` naming the table and the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.audio.formats import ModelAudio
from bridge.errors import ConfigError
from bridge.tools.spec import ToolSpec, parse_tools
from bridge.tools.transfer import TransferConfig, parse_transfer

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise voice assistant on a phone line. Keep answers short, "
    "speak naturally, and ask one question at a time."
)
DEFAULT_GREETING = "Hello! How can I help you today?"
# Voices the GA Realtime API accepts for audio output.
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)


@dataclass(frozen=True)
class TurnDetection:
    """Server VAD settings sent to the model (``session.audio.input.turn_detection``)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class Fallback:
    """What a caller gets when the model cannot be reached (``bridge.fallback``): ``say``
    a message and hang up, ``redirect`` the call to another TwiML URL, or ``dial`` a
    number (E.164) or SIP URI."""

    kind: str  # "say" | "redirect" | "dial"
    target: str


@dataclass(frozen=True)
class Agent:
    """One voice agent: what the model is told, and how interruptions behave."""

    name: str = "default"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    # Output speech speed (session.audio.output.speed, 0.25-1.5); 1.0 is not sent.
    speed: float = 1.0
    greeting: str = DEFAULT_GREETING
    turn_detection: TurnDetection = field(default_factory=TurnDetection)
    # Called numbers (E.164), SIP users, or full SIP URIs that reach this agent.
    numbers: tuple[str, ...] = ()
    # Bridge-side voice activity detection that stops playback before the model reacts.
    local_barge_in: bool = True
    barge_in_min_ms: int = 200
    # The first part of the greeting cannot be interrupted (line noise on pick-up).
    greeting_guard_ms: int = 1500
    # Keep a stereo WAV of each call (caller left, agent right) in RECORDINGS_DIR.
    record: bool = False
    # What raw Realtime proxy clients may change in the session (bridge.proxy.rules).
    realtime_client_may_set: tuple[str, ...] = (
        "voice",
        "turn_detection",
        "transcription",
        "modalities",
    )
    # When the model cannot be reached; None: say UNAVAILABLE_MESSAGE and hang up.
    fallback: Fallback | None = None
    # Tools and call control (bridge.tools; README "Tools and call control").
    tools: tuple[ToolSpec, ...] = ()
    builtin_tools: tuple[str, ...] = ()  # enabled built-ins, e.g. ("end_call",)
    transfer: TransferConfig | None = None  # [agents.NAME.transfer]: enables transfer_call
    tools_secret: str | None = field(default=None, repr=False)  # signs tool requests
    tools_send_caller_number: bool = False  # else the caller's number is masked
    tool_filler_after_ms: int = 1500  # 0: no filler line while a tool runs
    tool_filler: str = "One moment, please."
    dtmf: bool = True  # keypad digits reach the model
    dtmf_max_digits: int = 0  # 0: until '#' or a pause
    dtmf_pause_ms: int = 2000
    silence_timeout_s: float = 0.0  # 0: a silent caller is not nudged
    silence_prompt: str = "Are you still there?"
    silence_max_nudges: int = 2
    silence_goodbye: str = "I have not heard from you, so I will end the call now. Goodbye!"
    # Outbound calls that reach an answering machine (bridge.outbound): said after the
    # beep, then the call ends. Empty: hang up without a message.
    voicemail: str = ""
    # The model's audio format: "pcm16" (PCM16 24 kHz, transcoded on the bridge), "pcmu"
    # (G.711 μ-law 8 kHz: a Twilio call's audio passes through untouched both ways) or
    # "pcmu-in" (the caller's μ-law goes to the model untouched, the model's PCM16 is
    # transcoded for the caller); README "Cost per call".
    model_audio: ModelAudio = "pcm16"
    # Local agent only: trigger ("utterance", "dtmf_0", …) → tool it calls (README).
    local_tool_triggers: tuple[tuple[str, str], ...] = ()


def load_agents(
    path: Path, base: Agent, env: Mapping[str, str] | None = None
) -> tuple[tuple[Agent, ...], str]:
    """Read an agents TOML file; every agent inherits unset fields from ``base``.

    ``env`` resolves ``${NAME}`` in tool headers and ``tools_secret_env``."""
    where = f"AGENTS_FILE ({path})"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    table = data.get("agents")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: needs at least one [agents.NAME] table")
    agents = []
    for name, spec in table.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: [agents.{name}] must be a table")
        agents.append(_agent_from_toml(name, spec, base, where, env or {}))
    default = data.get("default", agents[0].name)
    if default not in {a.name for a in agents}:
        raise ConfigError(f"{where}: default = {default!r} names no agent")
    seen: dict[str, str] = {}
    for agent in agents:
        for number in agent.numbers:
            if number in seen:
                raise ConfigError(
                    f"{where}: {number!r} is routed to both {seen[number]!r} and {agent.name!r}"
                )
            seen[number] = agent.name
    return tuple(agents), default


# Every key an agent may set: its type and, for numbers, the range it must fall in.
_AGENT_FIELDS: dict[str, tuple[type, float, float]] = {
    "instructions": (str, 0, 0),
    "voice": (str, 0, 0),
    "greeting": (str, 0, 0),
    "local_barge_in": (bool, 0, 0),
    "barge_in_min_ms": (int, 20, 5000),
    "greeting_guard_ms": (int, 0, 60_000),
    "record": (bool, 0, 0),
    "tools_send_caller_number": (bool, 0, 0),
    "tool_filler_after_ms": (int, 0, 60_000),
    "tool_filler": (str, 0, 0),
    "dtmf": (bool, 0, 0),
    "dtmf_max_digits": (int, 0, 64),
    "dtmf_pause_ms": (int, 200, 30_000),
    "silence_timeout_s": (float, 0, 3600),
    "silence_prompt": (str, 0, 0),
    "silence_max_nudges": (int, 0, 10),
    "silence_goodbye": (str, 0, 0),
    "voicemail": (str, 0, 0),
    "model_audio": (str, 0, 0),
}
MODEL_AUDIO = ("pcm16", "pcmu", "pcmu-in")
_TURN_FIELDS: dict[str, tuple[type, float, float]] = {
    "threshold": (float, 0.0, 1.0),
    "prefix_padding_ms": (int, 0, 5000),
    "silence_duration_ms": (int, 50, 10_000),
}


# Keys read by hand: tools, built-ins, the secret's variable and local-agent triggers.
_CONTROL_KEYS = {"tools", "end_call", "tools_secret_env", "local_tool_triggers", "transfer"}
# What an agent may let raw Realtime proxy clients change (``realtime_client_may_set``).
REALTIME_CLIENT_SETTABLE = frozenset(
    {"voice", "turn_detection", "transcription", "modalities", "instructions", "tools"}
)


def _client_may_set(here: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(v in REALTIME_CLIENT_SETTABLE for v in value):
        raise ConfigError(
            f"{here} realtime_client_may_set must be a list of "
            f"{', '.join(sorted(REALTIME_CLIENT_SETTABLE))}"
        )
    return tuple(value)


def _agent_from_toml(
    name: str, spec: dict[str, Any], base: Agent, where: str, env: Mapping[str, str]
) -> Agent:
    here = f"{where}: [agents.{name}]"
    unknown = set(spec) - set(_AGENT_FIELDS) - {"numbers", "turn_detection", "fallback"}
    unknown -= {"realtime_client_may_set"}
    unknown -= _CONTROL_KEYS
    if unknown:
        raise ConfigError(f"{here} has unknown keys {sorted(unknown)}")
    fields = {
        k: _checked(here, k, v, _AGENT_FIELDS[k]) for k, v in spec.items() if k in _AGENT_FIELDS
    }
    numbers = spec.get("numbers", [])
    if not isinstance(numbers, list) or not all(isinstance(n, str) and n for n in numbers):
        raise ConfigError(f"{here} numbers must be a list of numbers or SIP users as text")
    turn_spec = spec.get("turn_detection", {})
    if not isinstance(turn_spec, dict):
        raise ConfigError(f"{here} turn_detection must be a table")
    unknown = set(turn_spec) - set(_TURN_FIELDS)
    if unknown:
        raise ConfigError(f"{here}.turn_detection has unknown keys {sorted(unknown)}")
    turn = replace(
        base.turn_detection,
        **{
            k: _checked(f"{here}.turn_detection", k, v, _TURN_FIELDS[k])
            for k, v in turn_spec.items()
        },
    )
    if "fallback" in spec:
        fields["fallback"] = _fallback(here, spec["fallback"])
    if "realtime_client_may_set" in spec:
        fields["realtime_client_may_set"] = _client_may_set(here, spec["realtime_client_may_set"])
    fields.update(_control_fields(here, spec, env))
    agent = replace(base, name=name, numbers=tuple(numbers), turn_detection=turn, **fields)
    if agent.model_audio not in MODEL_AUDIO:
        raise ConfigError(f"{here} model_audio must be one of {list(MODEL_AUDIO)}")
    if agent.voice not in VOICES:
        raise ConfigError(f"{here} voice {agent.voice!r} is not one of {sorted(VOICES)}")
    return agent


def _fallback(here: str, spec: object) -> Fallback:
    """``fallback = {say = "…"}``, ``{redirect = "https://…"}`` or ``{dial = "+1…"}``."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f'{here} fallback must be one of {{say|redirect|dial = "…"}}')
    ((kind, target),) = spec.items()
    if kind not in ("say", "redirect", "dial") or not isinstance(target, str) or not target:
        raise ConfigError(f'{here} fallback must be one of {{say|redirect|dial = "…"}}')
    target = target.strip()
    if kind == "redirect":
        parts = urlsplit(target)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ConfigError(f"{here} fallback redirect {target!r} must be an http(s) URL")
    if kind == "dial" and not (
        re.fullmatch(r"\+[1-9][0-9]{6,14}", target)
        or re.fullmatch(r"sips?:[^\s<>\"]+@[^\s<>\"]+", target)
    ):
        raise ConfigError(f"{here} fallback dial {target!r} must be +E.164 or a sip: URI")
    if len(target) > 4000:
        raise ConfigError(f"{here} fallback is longer than 4000 characters")
    return Fallback(kind, target)


def _control_fields(here: str, spec: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Tools, built-ins, the tool secret and local-agent triggers of one agent table."""
    fields: dict[str, Any] = {}
    if "tools" in spec:
        fields["tools"] = parse_tools(spec["tools"], here, env)
    if "end_call" in spec:
        end_call = _checked(here, "end_call", spec["end_call"], (bool, 0, 0))
        fields["builtin_tools"] = ("end_call",) if end_call else ()
    if "transfer" in spec:
        fields["transfer"] = parse_transfer(here, spec["transfer"])
        fields["builtin_tools"] = (*fields.get("builtin_tools", ()), "transfer_call")
    if "tools_secret_env" in spec:
        var = spec["tools_secret_env"]
        if not isinstance(var, str) or not env.get(var):
            raise ConfigError(f"{here} tools_secret_env names {var!r}, which is not set")
        fields["tools_secret"] = env[var]
    elif fields.get("tools"):
        raise ConfigError(f"{here} declares tools but no tools_secret_env to sign requests")
    triggers = spec.get("local_tool_triggers", {})
    if not isinstance(triggers, dict) or not all(isinstance(v, str) for v in triggers.values()):
        raise ConfigError(f"{here} local_tool_triggers must be a table of tool names")
    # A trigger may name an undeclared tool on purpose: it exercises the unknown-tool path.
    for trigger, tool in triggers.items():
        if trigger != "utterance" and not re.fullmatch(r"dtmf_[0-9*#]+", trigger):
            raise ConfigError(f"{here} local_tool_triggers: {trigger!r} is not a trigger")
        if not tool.strip() or "\n" in tool:
            raise ConfigError(f"{here} local_tool_triggers: {trigger} needs a tool name")
    if triggers:
        fields["local_tool_triggers"] = tuple(triggers.items())
    return fields


def _checked(here: str, key: str, value: object, rule: tuple[type, float, float]) -> Any:
    kind, lo, hi = rule
    # TOML integers are fine where a float is wanted; booleans are never numbers.
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{here} {key} must be {kind.__name__}, not {value!r}")
    if kind in (int, float) and not lo <= value <= hi:  # type: ignore[operator]
        raise ConfigError(f"{here} {key} = {value} is out of range [{lo:g}, {hi:g}]")
    return value


def sip_user(uri: str) -> str:
    """``sip:support@example.sip.twilio.com;transport=tls`` → ``support``."""
    if uri.startswith(("sip:", "sips:")):
        return uri.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    return uri
