"""When and how often to (re)open a model session, and what a model ``error`` means. Sans-I/O.

Owns two small policies and nothing else (no sockets, no clock: time comes in as ``now``,
randomness from an injected ``random.Random``):

- :class:`Retry`: jittered exponential backoff for opening one session, inside a budget
  (at most ``attempts`` tries, none started after ``budget_s`` from the first). A refused
  key (HTTP 401/403) is never retried: it will not get better in a second.
- :func:`classify_error`: which kind of model ``error`` event this is. None of them ends a
  call: the runner logs each at the level its kind deserves and reconnects on
  ``session_expired`` (the socket closes right after it anyway).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Literal

from bridge.ai.events import ServerError
from bridge.config import Settings

logger = logging.getLogger(__name__)

__all__ = ["ErrorKind", "Retry", "RetryConfig", "classify_error", "retryable_status"]

# The attempt after a failure waits base * 2**n, times a random factor in [0.5, 1.5).
BASE_DELAY_S = 0.25
MAX_DELAY_S = 2.0
NOT_RETRIED = frozenset({401, 403})


@dataclass(frozen=True)
class RetryConfig:
    """How a call reaches its model: retries per (re)connection, recycling, replay."""

    attempts: int = 3  # handshakes per (re)connection
    budget_s: float = 4.0  # no new attempt starts later than this after the first
    recycle_after_s: float = 3300.0  # replace a session this old at a quiet moment
    replay_max_items: int = 20  # conversation items given to a new session (newest kept)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryConfig:
        return cls(
            attempts=settings.model_reconnect_attempts,
            budget_s=settings.model_retry_budget_s,
            recycle_after_s=settings.model_recycle_after_s,
            replay_max_items=settings.replay_max_items,
        )


def retryable_status(status: int | None) -> bool:
    """Whether a handshake answered with HTTP ``status`` is worth another try
    (None: no HTTP answer at all, e.g. refused or timed out: yes)."""
    return status not in NOT_RETRIED


class Retry:
    """Backoff for one (re)connection: ask :meth:`next_delay` after each failed attempt."""

    def __init__(self, config: RetryConfig, now: float, rng: random.Random | None = None) -> None:
        self.config = config
        self.started = now
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self, now: float, status: int | None = None) -> float | None:
        """A failed attempt at ``now`` (HTTP ``status`` if the handshake got one): how long
        to wait before the next one, or None to give up."""
        self.failures += 1
        if not retryable_status(status) or self.failures >= self.config.attempts:
            return None
        delay = min(BASE_DELAY_S * 2 ** (self.failures - 1), MAX_DELAY_S)
        delay *= 0.5 + self._rng.random()
        left = self.started + self.config.budget_s - now
        if delay > left:
            if left <= 0:
                return None
            delay = left * self._rng.uniform(0.5, 1.0)  # one last try inside the budget
        return float(delay)


ErrorKind = Literal["ours", "rate_limit", "session_expired", "other", "race"]

# Codes meaning the bridge sent something the service rejects: a bug on our side.
_OURS = {
    "invalid_value",
    "invalid_request_error",
    "unknown_parameter",
    "missing_required_parameter",
    "invalid_type",
    "decimal_below_min_value",
    "integer_above_max_value",
    "conversation_already_has_active_response",
    "response_cancel_not_active",
    "input_audio_buffer_commit_empty",
}


def classify_error(error: ServerError) -> ErrorKind:
    """What kind of ``error`` event this is (see the module doc)."""
    code = error.code or ""
    if code == "session_expired":
        return "session_expired"
    if code in {"rate_limit_exceeded", "rate_limit"} or error.type in {
        "rate_limit_error",
        "rate_limit_exceeded",
    }:
        return "rate_limit"
    if code in _OURS or (error.type == "invalid_request_error" and error.event_id is not None):
        return "ours"
    return "other"


def log_model_error(call_sid: str, error: ServerError, *, raced: bool = False) -> ErrorKind:
    """Log an ``error`` event at the level its kind deserves; return the kind.

    ``raced``: the caller knows it refused a ``response.create`` of ours that crossed a
    response the model had just begun itself (``bridge.responses``): a race, not a bug."""
    if raced:
        logger.info("call %s: response.create crossed one the model began", call_sid)
        return "race"
    kind = classify_error(error)
    if kind == "ours":  # a bug of ours: the whole event, loudly
        logger.error("call %s: model rejected what we sent: %s", call_sid, error)
    elif kind == "session_expired":
        logger.info("call %s: model session expired: %s", call_sid, error.message)
    else:
        logger.warning(
            "call %s: model error (%s) %s: %s", call_sid, kind, error.code, error.message
        )
    return kind
