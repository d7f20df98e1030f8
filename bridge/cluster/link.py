"""The connection to Redis, and how every cluster module survives losing it.

Owns the ``redis.asyncio`` client built from ``REDIS_URL``, the key names (one hash tag,
so every key lands in one slot and the Lua scripts stay valid on a Redis Cluster), the
instance id, and the one rule for errors: an operation toward Redis is bounded by
``op_timeout_s``; a network or Redis error is caught here, logged (once when Redis goes
away, once when it is back: never per operation, never the URL's password) and turned
into the caller's fallback value. After a failure, operations fail fast for
``retry_after_s`` so a dead Redis does not cost each call a connect timeout; the
heartbeat keeps trying and clears that as soon as Redis answers again.

It knows nothing about calls, caps or breakers: those modules give it coroutines to run.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterOptions:
    """Timings of the shared state. Tests shorten the lease; production keeps the defaults."""

    lease_s: float = 15.0  # a dead instance's calls stop counting within this
    renew_s: float = 5.0  # the heartbeat renews this instance's leases this often
    breaker_poll_s: float = 0.5  # how stale an instance's view of the shared breaker may be
    breaker_hold_s: float = 15.0  # an opener that died stops holding the breaker open after
    hangup_timeout_s: float = 3.0  # a remote hang-up with no answer by then: unreachable
    op_timeout_s: float = 1.0  # one Redis operation on the call path
    retry_after_s: float = 1.0  # after a failure, fail fast this long (the heartbeat retries)
    prefix: str = "{bridge}:"  # the braces are a Redis Cluster hash tag: one slot for all keys

    def __post_init__(self) -> None:
        if not 0 < self.renew_s < self.lease_s:
            raise ValueError("renew_s must be positive and shorter than lease_s")
        if not 0 < self.breaker_poll_s < self.breaker_hold_s:
            raise ValueError("breaker_poll_s must be positive and shorter than breaker_hold_s")


def new_instance_id() -> str:
    """``hostname-pid-random``: unique per process, readable in ``GET /calls``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def redact_url(url: str) -> str:
    """The URL without its password (``redis://:***@host:6379/0``): safe to log."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<redis url>"


def caller_hash(salt: str, caller: str) -> str:
    """A caller number as Redis may keep it: HMAC-SHA256 under the cluster's salt, cut to
    128 bits. Equal numbers give equal keys on every instance; the number is never stored."""
    digest = hmac.new(salt.encode(), caller.strip().encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


class Keys:
    """Every key and channel name the cluster uses, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.salt = f"{prefix}caller-salt"  # random, made once by whichever instance is first
        self.cap_calls = f"{prefix}cap:calls"  # zset call sid -> lease end (ms, Redis clock)
        self.live = f"{prefix}live"  # zset call sid -> lease end: the registry's index
        self.breaker = f"{prefix}breaker:open"  # exists while the breaker is open somewhere
        self.breaker_closes = f"{prefix}breaker:closes"  # counts closes, seen by every poll

    def cap_caller(self, hashed: str) -> str:
        return f"{self.prefix}cap:caller:{hashed}"

    def live_call(self, call_sid: str) -> str:
        return f"{self.prefix}live:{call_sid}"

    def hangup_channel(self, instance_id: str) -> str:
        return f"{self.prefix}hangup:{instance_id}"

    def reply(self, token: str) -> str:
        return f"{self.prefix}reply:{token}"


class RedisLink:
    """One client, the key names, and :meth:`run`: every operation's error boundary."""

    def __init__(self, url: str, options: ClusterOptions, instance_id: str) -> None:
        self.options = options
        self.instance_id = instance_id
        self.where = redact_url(url)
        self.keys = Keys(options.prefix)
        # No retries of our own inside redis-py: a blink costs one op_timeout at most, and
        # the heartbeat is the retry. The socket timeout leaves room for BLPOP's wait.
        self.client: aioredis.Redis = aioredis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=options.op_timeout_s,
            socket_timeout=options.hangup_timeout_s + options.op_timeout_s + 1.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=max(1, int(options.renew_s)),
        )
        self.up = True  # as far as we know; False after a failure until an operation works
        self.failures = 0
        self._fail_fast_until = 0.0

    async def run(
        self,
        what: str,
        operation: Callable[[], Awaitable[T]],
        fallback: T,
        *,
        timeout_s: float | None = None,
        force: bool = False,
    ) -> T:
        """``await operation()`` within the timeout; on any Redis or network error log
        (the first time), and return ``fallback``. ``force``: try even in the fail-fast
        window (the heartbeat does, so recovery is noticed)."""
        if not force and not self.up and time.monotonic() < self._fail_fast_until:
            return fallback
        try:
            async with asyncio.timeout(timeout_s or self.options.op_timeout_s):
                result = await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            raise_if_cancelled(exc)
            self.failed(what, exc)
            return fallback
        if not self.up:
            self.up = True
            logger.warning("redis at %s reachable again: shared state restored", self.where)
        return result

    def failed(self, what: str, exc: BaseException) -> None:
        """Note a failure (tasks that catch their own errors report them here)."""
        self.failures += 1
        self._fail_fast_until = time.monotonic() + self.options.retry_after_s
        if self.up:
            self.up = False
            logger.warning(
                "redis at %s unreachable (%s: %s: %s): cluster state degraded to this "
                "process (local caps only, remote calls not listed) until it answers",
                self.where,
                what,
                type(exc).__name__,
                _safe(str(exc)),
            )
        else:
            logger.debug("redis still unreachable (%s: %s)", what, type(exc).__name__)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("redis client close: %s", type(exc).__name__)


def raise_if_cancelled(exc: BaseException | None) -> None:
    """Re-raise a cancellation that a timeout (or redis-py) turned into an error: on
    Python 3.11 a cancel that lands as ``asyncio.timeout`` fires comes out as
    TimeoutError, and a loop that caught it would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def _safe(text: str) -> str:
    """An error message, cut short; redis-py does not put passwords in them."""
    return text if len(text) <= 200 else text[:200] + "…"
