"""Settings: the one place that reads the environment.

``Settings.from_env(environ)`` builds a frozen ``Settings`` from a mapping (``os.environ``
in production, a plain dict in tests) and an optional ``.env`` file. Nothing else in the
project reads ``os.environ``. A malformed value raises ``ConfigError`` naming the variable,
so a bad deploy fails at start-up instead of on the first call.

Agents (``bridge.agents``) come from an optional TOML file (``AGENTS_FILE``); without it
there is one default agent built from ``OPENAI_VOICE`` / ``AGENT_INSTRUCTIONS`` /
``AGENT_GREETING`` (set but empty: the agent does not greet).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from bridge.agents import (
    DEFAULT_GREETING,
    DEFAULT_INSTRUCTIONS,
    MODEL_AUDIO,
    VOICES,
    Agent,
    load_agents,
    sip_user,
)
from bridge.audio.formats import ModelAudio
from bridge.errors import ConfigError

DEFAULT_UNAVAILABLE = "Sorry, the assistant is not available right now. Please call again later."


@dataclass(frozen=True)
class Settings:
    public_url: str | None = None
    twilio_auth_token: str | None = None
    # Twilio REST (bridge.twilio_api): TWILIO_ACCOUNT_SID, and TWILIO_API_BASE_URL to point
    # the SDK's ``api`` domain elsewhere (for tests and stand-ins; None: the real Twilio).
    twilio_account_sid: str | None = None
    twilio_api_base_url: str | None = None
    # Outbound calls (bridge.outbound): the From number (TWILIO_CALLER_ID), E.164.
    twilio_caller_id: str | None = None
    openai_api_key: str | None = None
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_model: str = "gpt-realtime"
    # REST calls (ephemeral client secrets, speech): OPENAI_BASE_URL.
    openai_base_url: str = "https://api.openai.com/v1"
    # Raw PCM voice clients (``bridge.wsvoice``) are served at ``/`` too (WS_VOICE_AT_ROOT).
    ws_voice_at_root: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    # Worker processes of ``bridge serve`` (WORKERS; 0: one per core, ``bridge.workers``).
    workers: int = 1
    # Key for the per-call stream tokens; random per process unless configured.
    stream_token_secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    stream_token_ttl_s: int = 300
    playout_lead_ms: int = 160
    # Caller audio gathered per input_audio_buffer.append (a multiple of 20 ms): fewer,
    # larger messages to the model, for at most this much later hearing (README "Cost").
    uplink_batch_ms: int = 60
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
    # A Socket.IO client whose connection drops may resume its session within this (s).
    socketio_resume_grace_s: float = 10.0
    # The raw Realtime proxy (bridge.proxy): live sessions, client messages per second.
    realtime_proxy_max_sessions: int = 50
    realtime_proxy_messages_per_s: float = 100.0
    # Call records (bridge.store): DATABASE_URL (postgresql://…, sqlite:///…) wins over
    # RECORDS_PATH (a SQLite file). Both None: no records. The environment's default is
    # records.db; Settings() built in code (tests) keeps none, so nothing litters the cwd.
    database_url: str | None = None
    records_path: str | None = None
    records_retention_days: float | None = None  # None: keep records forever
    recordings_dir: str = "recordings"  # RECORDINGS_DIR: where agents with record=true write
    log_format: str = "text"  # LOG_FORMAT: "text", or "json" (one JSON object a line)
    # Model sessions (bridge.ai.reconnect): handshakes per (re)connection and the time they
    # may take; age at which a session is replaced at a quiet moment; how many conversation
    # items a new session is given (newest kept).
    model_reconnect_attempts: int = 3
    model_retry_budget_s: float = 4.0
    model_recycle_after_s: float = 3300.0
    replay_max_items: int = 20
    # No open door (bridge.limits): a real key without Twilio signatures needs this opt-out.
    allow_unsigned_webhooks: bool = False
    # Circuit breaker (bridge.breaker): consecutive calls that could not reach the model
    # before new calls get the fallback at once (0: never), and how often it probes.
    model_breaker_threshold: int = 3
    model_breaker_probe_s: float = 5.0
    # Limits (bridge.limits): live calls per caller (From), new media streams and
    # Socket.IO connections per client address (token bucket), who may set
    # X-Forwarded-For, and when a silent Twilio socket counts as dead. The environment's
    # defaults are 3 calls and 10 connections a second; Settings() built in code (tests,
    # benchmarks, many calls from one simulated number) has neither cap.
    max_calls_per_caller: int = 0
    connect_rate_per_ip: float = 0.0
    connect_burst_per_ip: int = 50
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    media_ping_interval_s: float = 10.0
    media_ping_timeout_s: float = 10.0
    media_idle_timeout_s: float = 15.0
    # Bearer token of the admin HTTP API and console (None: those routes are not served).
    admin_token: str | None = field(default=None, repr=False)
    # The companion protocol (bridge.companion): live sessions per userId, non-audio
    # messages a minute per client, idle time before a session closes, earlier turns of a
    # conversation given to a returning session.
    companion_max_sessions_per_user: int = 3
    companion_messages_per_minute: int = 100
    companion_idle_timeout_s: float = 600.0
    companion_history_turns: int = 20
    # Shared state across instances (bridge.cluster): REDIS_URL (redis://, rediss://; None:
    # each process keeps its own live calls, caps and breaker, as a single process does).
    redis_url: str | None = field(default=None, repr=False)
    # A crashed instance's calls stop counting toward the cluster's caps within this time.
    cluster_lease_s: float = 15.0

    def __repr__(self) -> str:  # never print secrets
        hidden = {
            "twilio_auth_token",
            "openai_api_key",
            "stream_token_secret",
            "softphone_token",
            "admin_token",
            "database_url",  # may carry a password
            "redis_url",  # may carry a password
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
            keys = {called, sip_user(called)}
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
            model_audio=cast(
                ModelAudio, get.choice("MODEL_AUDIO_FORMAT", set(MODEL_AUDIO)) or "pcm16"
            ),
        )
        agents: tuple[Agent, ...] = (default,)
        default_name = "default"
        agents_file = get.text("AGENTS_FILE")
        if agents_file:
            agents, default_name = load_agents(Path(agents_file), default, env)

        settings = cls(
            public_url=public_url.rstrip("/") if public_url else None,
            twilio_auth_token=token,
            twilio_account_sid=get.text("TWILIO_ACCOUNT_SID"),
            twilio_api_base_url=_strip_slash(
                get.url("TWILIO_API_BASE_URL", schemes=("https", "http"))
            ),
            twilio_caller_id=get.text("TWILIO_CALLER_ID"),
            openai_api_key=get.text("OPENAI_API_KEY"),
            openai_realtime_url=get.url("OPENAI_REALTIME_URL", schemes=("wss", "ws"))
            or cls.openai_realtime_url,
            openai_realtime_model=get.text("OPENAI_REALTIME_MODEL") or cls.openai_realtime_model,
            openai_base_url=(
                get.url("OPENAI_BASE_URL", schemes=("https", "http")) or cls.openai_base_url
            ).rstrip("/"),
            ws_voice_at_root=get.flag("WS_VOICE_AT_ROOT") if get.text("WS_VOICE_AT_ROOT") else True,
            host=get.text("HOST") or cls.host,
            port=get.integer("PORT", cls.port, lo=0, hi=65535),
            workers=0
            if (get.text("WORKERS") or "").lower() == "auto"
            else get.integer("WORKERS", 1, lo=0, hi=1024),
            stream_token_secret=get.text("STREAM_TOKEN_SECRET") or secrets.token_hex(32),
            stream_token_ttl_s=get.integer("STREAM_TOKEN_TTL_S", 300, lo=10, hi=86400),
            playout_lead_ms=get.integer("PLAYOUT_LEAD_MS", 160, lo=40, hi=2000),
            uplink_batch_ms=get.integer("UPLINK_BATCH_MS", cls.uplink_batch_ms, lo=20, hi=200),
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
            socketio_resume_grace_s=get.number("SOCKETIO_RESUME_GRACE_S", 10.0, lo=0, hi=3600),
            realtime_proxy_max_sessions=get.integer(
                "REALTIME_PROXY_MAX_SESSIONS", 50, lo=0, hi=10_000
            ),
            realtime_proxy_messages_per_s=get.number(
                "REALTIME_PROXY_MESSAGES_PER_S", 100.0, lo=1, hi=10_000
            ),
            database_url=get.text("DATABASE_URL"),
            # RECORDS_PATH=off keeps no records (unless DATABASE_URL is set).
            records_path=None
            if (get.text("RECORDS_PATH") or "").lower() == "off"
            else get.text("RECORDS_PATH") or "records.db",
            records_retention_days=get.number("RECORDS_RETENTION_DAYS", 0, lo=0, hi=36500) or None,
            recordings_dir=get.text("RECORDINGS_DIR") or cls.recordings_dir,
            log_format=get.choice("LOG_FORMAT", {"text", "json"}) or "text",
            model_reconnect_attempts=get.integer("MODEL_RECONNECT_ATTEMPTS", 3, lo=1, hi=20),
            model_retry_budget_s=get.number("MODEL_RETRY_BUDGET_S", 4.0, lo=0.1, hi=120),
            model_recycle_after_s=get.number("MODEL_RECYCLE_AFTER_S", 3300.0, lo=10, hi=86400),
            replay_max_items=get.integer("REPLAY_MAX_ITEMS", 20, lo=0, hi=64),
            allow_unsigned_webhooks=get.flag("ALLOW_UNSIGNED_WEBHOOKS"),
            model_breaker_threshold=get.integer("MODEL_BREAKER_THRESHOLD", 3, lo=0, hi=1000),
            model_breaker_probe_s=get.number("MODEL_BREAKER_PROBE_S", 5.0, lo=0.1, hi=3600),
            max_calls_per_caller=get.integer("MAX_CALLS_PER_CALLER", 3, lo=0, hi=100_000),
            connect_rate_per_ip=get.number("CONNECT_RATE_PER_IP", 10.0, lo=0, hi=100_000),
            connect_burst_per_ip=get.integer("CONNECT_BURST_PER_IP", 50, lo=1, hi=100_000),
            trusted_proxies=get.items("TRUSTED_PROXIES")
            if "TRUSTED_PROXIES" in env
            else cls.trusted_proxies,
            media_ping_interval_s=get.number("MEDIA_PING_INTERVAL_S", 10.0, lo=0, hi=3600),
            media_ping_timeout_s=get.number("MEDIA_PING_TIMEOUT_S", 10.0, lo=1, hi=3600),
            media_idle_timeout_s=get.number("MEDIA_IDLE_TIMEOUT_S", 15.0, lo=1, hi=3600),
            admin_token=get.text("ADMIN_TOKEN"),
            companion_max_sessions_per_user=get.integer(
                "COMPANION_MAX_SESSIONS_PER_USER", 3, lo=1, hi=1000
            ),
            companion_messages_per_minute=get.integer(
                "COMPANION_MESSAGES_PER_MINUTE", 100, lo=1, hi=100_000
            ),
            companion_idle_timeout_s=get.number("COMPANION_IDLE_TIMEOUT_S", 600.0, lo=1, hi=86400),
            companion_history_turns=get.integer("COMPANION_HISTORY_TURNS", 20, lo=0, hi=64),
            redis_url=get.url("REDIS_URL", schemes=("redis", "rediss")),
            cluster_lease_s=get.number("CLUSTER_LEASE_S", 15.0, lo=1, hi=600),
        )
        if settings.openai_api_key and not token and not settings.allow_unsigned_webhooks:
            raise ConfigError(
                "OPENAI_API_KEY is set but TWILIO_AUTH_TOKEN is not: anyone who finds the "
                "URL could open model sessions on your key. Set TWILIO_AUTH_TOKEN (and "
                "PUBLIC_URL), or ALLOW_UNSIGNED_WEBHOOKS=1 for a local test"
            )
        if settings.uplink_batch_ms % 20:
            raise ConfigError(f"UPLINK_BATCH_MS={settings.uplink_batch_ms} is not a multiple of 20")
        if settings.twilio_auth_token and not settings.public_url:
            raise ConfigError(
                "PUBLIC_URL is required when TWILIO_AUTH_TOKEN is set: signatures are "
                "checked against the public URL Twilio calls (e.g. https://abc.ngrok.app)"
            )
        return settings


def _strip_slash(url: str | None) -> str | None:
    return url.rstrip("/") if url else None


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

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "0").lower()
        if raw not in {"0", "1", "true", "false", "yes", "no"}:
            raise ConfigError(f"{name}={raw!r} must be 1 or 0")
        return raw in {"1", "true", "yes"}

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
