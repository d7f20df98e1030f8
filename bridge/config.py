"""Settings: the one place that reads the environment.

``Settings.from_env(environ)`` builds a frozen ``Settings`` from a mapping (``os.environ``
in production, a plain dict in tests) and an optional ``.env`` file. Nothing else in the
project reads ``os.environ``. A malformed value raises ``ConfigError`` naming the variable,
so a bad deploy fails at start-up instead of on the first call.

Agents come from an optional TOML file (``AGENTS_FILE``); without it there is one default
agent built from ``OPENAI_VOICE`` / ``AGENT_INSTRUCTIONS`` / ``AGENT_GREETING`` (set but
empty: the agent does not greet).
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import ConfigError

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise voice assistant on a phone line. Keep answers short, "
    "speak naturally, and ask one question at a time."
)
DEFAULT_GREETING = "Hello! How can I help you today?"
DEFAULT_UNAVAILABLE = "Sorry, the assistant is not available right now. Please call again later."
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
class Agent:
    """One voice agent: what the model is told, and how interruptions behave."""

    name: str = "default"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    greeting: str = DEFAULT_GREETING
    turn_detection: TurnDetection = field(default_factory=TurnDetection)
    # Called numbers (E.164), SIP users, or full SIP URIs that reach this agent.
    numbers: tuple[str, ...] = ()
    # Bridge-side voice activity detection that stops playback before the model reacts.
    local_barge_in: bool = True
    barge_in_min_ms: int = 200
    # The first part of the greeting cannot be interrupted (line noise on pick-up).
    greeting_guard_ms: int = 1500


@dataclass(frozen=True)
class Settings:
    public_url: str | None = None
    twilio_auth_token: str | None = None
    openai_api_key: str | None = None
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_model: str = "gpt-realtime"
    host: str = "127.0.0.1"
    port: int = 8080
    # Key for the per-call stream tokens; random per process unless configured.
    stream_token_secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    stream_token_ttl_s: int = 300
    playout_lead_ms: int = 160
    max_message_bytes: int = 64 * 1024
    max_calls: int = 500
    shutdown_drain_s: float = 30.0
    # Said to a caller whose stream the bridge ends (model down, session at its limit).
    unavailable_message: str = DEFAULT_UNAVAILABLE
    log_level: str = "INFO"
    agents: tuple[Agent, ...] = (Agent(),)
    default_agent: str = "default"
    # Browser softphone.
    softphone_allowed_origins: tuple[str, ...] = ()
    softphone_token: str | None = field(default=None, repr=False)
    softphone_max_sessions: int = 50
    softphone_idle_timeout_s: float = 120.0
    # Call records (bridge.store): DATABASE_URL (postgresql://…, sqlite:///…) wins over
    # RECORDS_PATH (a SQLite file). Both None: no records. The environment's default is
    # records.db; Settings() built in code (tests) keeps none, so nothing litters the cwd.
    database_url: str | None = None
    records_path: str | None = None
    records_retention_days: float | None = None  # None: keep records forever
    log_format: str = "text"  # LOG_FORMAT: "text", or "json" (one JSON object a line)
    # Model sessions (bridge.ai.reconnect): handshakes per (re)connection and the time they
    # may take; age at which a session is replaced at a quiet moment; how many conversation
    # items a new session is given (newest kept).
    model_reconnect_attempts: int = 3
    model_retry_budget_s: float = 4.0
    model_recycle_after_s: float = 3300.0
    replay_max_items: int = 20

    def __repr__(self) -> str:  # never print secrets
        hidden = {
            "twilio_auth_token",
            "openai_api_key",
            "stream_token_secret",
            "softphone_token",
            "database_url",  # may carry a password
        }
        parts = [f"{k}={'***' if k in hidden and v else v!r}" for k, v in self.__dict__.items()]
        return f"Settings({', '.join(parts)})"

    @property
    def uses_local_agent(self) -> bool:
        return not self.openai_api_key

    @property
    def records_url(self) -> str | None:
        """Where call records go (a SQLite path or a database URL), or None: nowhere."""
        return self.database_url or self.records_path

    def agent(self, name: str) -> Agent | None:
        for agent in self.agents:
            if agent.name == name:
                return agent
        return None

    def agent_for(self, called: str | None) -> Agent:
        """The agent that answers a call to ``called`` (E.164, SIP URI, or SIP user)."""
        if called:
            keys = {called, _sip_user(called)}
            for agent in self.agents:
                if keys & set(agent.numbers):
                    return agent
        default = self.agent(self.default_agent)
        assert default is not None  # checked in from_env
        return default

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, env_file: str | Path | None = ".env"
    ) -> Settings:
        env: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            env.update(_read_env_file(Path(env_file)))
        env.update(environ)
        get = _Reader(env)

        public_url = get.url("PUBLIC_URL", schemes=("https", "http"))
        token = get.text("TWILIO_AUTH_TOKEN")
        default = Agent(
            instructions=get.text("AGENT_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
            voice=get.choice("OPENAI_VOICE", VOICES) or "marin",
            # Set but empty means "no greeting"; unset means the default one.
            greeting=env.get("AGENT_GREETING", DEFAULT_GREETING).strip(),
        )
        agents: tuple[Agent, ...] = (default,)
        default_name = "default"
        agents_file = get.text("AGENTS_FILE")
        if agents_file:
            agents, default_name = load_agents(Path(agents_file), default)

        settings = cls(
            public_url=public_url.rstrip("/") if public_url else None,
            twilio_auth_token=token,
            openai_api_key=get.text("OPENAI_API_KEY"),
            openai_realtime_url=get.url("OPENAI_REALTIME_URL", schemes=("wss", "ws"))
            or cls.openai_realtime_url,
            openai_realtime_model=get.text("OPENAI_REALTIME_MODEL") or cls.openai_realtime_model,
            host=get.text("HOST") or cls.host,
            port=get.integer("PORT", cls.port, lo=0, hi=65535),
            stream_token_secret=get.text("STREAM_TOKEN_SECRET") or secrets.token_hex(32),
            stream_token_ttl_s=get.integer("STREAM_TOKEN_TTL_S", 300, lo=10, hi=86400),
            playout_lead_ms=get.integer("PLAYOUT_LEAD_MS", 160, lo=40, hi=2000),
            max_message_bytes=get.integer("MAX_MESSAGE_BYTES", 64 * 1024, lo=1024, hi=16 << 20),
            max_calls=get.integer("MAX_CALLS", 500, lo=1, hi=100_000),
            shutdown_drain_s=get.number("SHUTDOWN_DRAIN_S", 30.0, lo=0, hi=3600),
            unavailable_message=env.get("UNAVAILABLE_MESSAGE", DEFAULT_UNAVAILABLE).strip(),
            log_level=get.choice("LOG_LEVEL", {"DEBUG", "INFO", "WARNING", "ERROR"}) or "INFO",
            agents=agents,
            default_agent=default_name,
            softphone_allowed_origins=get.items("SOFTPHONE_ALLOWED_ORIGINS"),
            softphone_token=get.text("SOFTPHONE_TOKEN"),
            softphone_max_sessions=get.integer("SOFTPHONE_MAX_SESSIONS", 50, lo=1, hi=10_000),
            softphone_idle_timeout_s=get.number("SOFTPHONE_IDLE_TIMEOUT_S", 120.0, lo=1, hi=86400),
            database_url=get.text("DATABASE_URL"),
            # RECORDS_PATH=off keeps no records (unless DATABASE_URL is set).
            records_path=None
            if (get.text("RECORDS_PATH") or "").lower() == "off"
            else get.text("RECORDS_PATH") or "records.db",
            records_retention_days=get.number("RECORDS_RETENTION_DAYS", 0, lo=0, hi=36500) or None,
            log_format=get.choice("LOG_FORMAT", {"text", "json"}) or "text",
            model_reconnect_attempts=get.integer("MODEL_RECONNECT_ATTEMPTS", 3, lo=1, hi=20),
            model_retry_budget_s=get.number("MODEL_RETRY_BUDGET_S", 4.0, lo=0.1, hi=120),
            model_recycle_after_s=get.number("MODEL_RECYCLE_AFTER_S", 3300.0, lo=10, hi=86400),
            replay_max_items=get.integer("REPLAY_MAX_ITEMS", 20, lo=0, hi=64),
        )
        if settings.twilio_auth_token and not settings.public_url:
            raise ConfigError(
                "PUBLIC_URL is required when TWILIO_AUTH_TOKEN is set: signatures are "
                "checked against the public URL Twilio calls (e.g. https://abc.ngrok.app)"
            )
        return settings


def load_agents(path: Path, base: Agent) -> tuple[tuple[Agent, ...], str]:
    """Read an agents TOML file; every agent inherits unset fields from ``base``."""
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
        agents.append(_agent_from_toml(name, spec, base, where))
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
}
_TURN_FIELDS: dict[str, tuple[type, float, float]] = {
    "threshold": (float, 0.0, 1.0),
    "prefix_padding_ms": (int, 0, 5000),
    "silence_duration_ms": (int, 50, 10_000),
}


def _agent_from_toml(name: str, spec: dict[str, Any], base: Agent, where: str) -> Agent:
    here = f"{where}: [agents.{name}]"
    unknown = set(spec) - set(_AGENT_FIELDS) - {"numbers", "turn_detection"}
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
    agent = replace(base, name=name, numbers=tuple(numbers), turn_detection=turn, **fields)
    if agent.voice not in VOICES:
        raise ConfigError(f"{here} voice {agent.voice!r} is not one of {sorted(VOICES)}")
    return agent


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


def _sip_user(uri: str) -> str:
    """``sip:support@example.sip.twilio.com;transport=tls`` → ``support``."""
    if uri.startswith(("sip:", "sips:")):
        return uri.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    return uri


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise ConfigError(f"{path}:{lineno}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


class _Reader:
    """Typed reads of environment variables; errors name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, lo: int, hi: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
        return value

    def number(self, name: str, default: float, *, lo: float, hi: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
        return value

    def choice(self, name: str, allowed: frozenset[str] | set[str]) -> str | None:
        raw = self.text(name)
        if raw is not None and raw not in allowed:
            raise ConfigError(f"{name}={raw!r} must be one of {sorted(allowed)}")
        return raw

    def url(self, name: str, *, schemes: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(f"{name}={raw!r} must be a {'/'.join(schemes)} URL with a host")
        if parts.query or parts.fragment:
            raise ConfigError(f"{name}={raw!r} must not carry a query or fragment")
        return raw

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return ()
        return tuple(item.strip() for item in raw.split(",") if item.strip())
