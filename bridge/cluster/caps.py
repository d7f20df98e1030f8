"""Cluster-wide call caps with leases: ``MAX_CALLS`` in all, ``MAX_CALLS_PER_CALLER`` each.

Owns two kinds of sorted sets in Redis, each member a call sid scored by the end of its
lease (milliseconds on the Redis server's clock, so instances' clocks never matter):
``cap:calls`` (every admitted call) and ``cap:caller:<hash>`` (one caller's calls; the key
is :func:`bridge.cluster.link.caller_hash` of the number, never the number). One Lua
script prunes expired members and admits or refuses atomically, so two instances racing
for the last place cannot both get it. This process's admitted calls are kept here too,
and :meth:`ClusterCaps.renew` (the heartbeat) extends their leases, adding back any a
Redis blink let expire: a crashed instance's calls stop counting within one lease.

Fail open: when Redis cannot be reached, :meth:`ClusterCaps.try_admit` admits with the
reason ``"redis unavailable"`` (logged by the link, once) and the caller's local caps
(``Services.at_capacity``, ``bridge.limits.CallerCount``) are what still hold. The call
is remembered, so the next heartbeat that reaches Redis counts it there.

It does not refuse calls by itself, answer Twilio or touch ``Services``.
"""

from __future__ import annotations

import logging
import secrets
from typing import NamedTuple

from bridge.cluster.link import RedisLink, caller_hash

logger = logging.getLogger(__name__)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] cap:calls, KEYS[2] cap:caller:<hash> (ignored without a caller)
# ARGV[1] call sid, ARGV[2] max calls (0: none), ARGV[3] max per caller (0: none),
# ARGV[4] lease ms, ARGV[5] "1" when the call has a caller
_ADMIT = (
    _NOW
    + """
local lease = tonumber(ARGV[4])
local has_caller = ARGV[5] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if has_caller then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local max_calls = tonumber(ARGV[2])
  if max_calls > 0 and redis.call('ZCARD', KEYS[1]) >= max_calls then return 'calls' end
  local per_caller = tonumber(ARGV[3])
  if has_caller and per_caller > 0 and redis.call('ZCARD', KEYS[2]) >= per_caller then
    return 'caller'
  end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
if has_caller then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], lease)
end
return 'ok'
"""
)

# KEYS[1] cap:calls, KEYS[2..] the caller sets in use; ARGV[1] lease ms, then pairs
# (call sid, index in KEYS of its caller set or 0). Expired members go, ours come back.
_RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  local k = tonumber(ARGV[i + 1])
  if k > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    redis.call('ZADD', KEYS[k], now + lease, ARGV[i])
    redis.call('PEXPIRE', KEYS[k], lease)
  end
end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], lease) end
return #ARGV
"""
)

# KEYS[1] the set; the members whose lease has not ended.
_COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)

ADMITTED = "ok"
AT_CAPACITY = "at capacity"
CALLER_AT_CAPACITY = "caller at capacity"
REDIS_UNAVAILABLE = "redis unavailable"


class Admission(NamedTuple):
    """``(ok, reason)``: reason is one of the module's constants (``ADMITTED`` …)."""

    ok: bool
    reason: str


class ClusterCaps:
    """The cluster's caps for this instance: admit, release, renew."""

    def __init__(self, link: RedisLink, max_calls: int, max_per_caller: int) -> None:
        self.link = link
        self.max_calls = max_calls  # 0: no cap
        self.max_per_caller = max_per_caller  # 0: no cap
        self._mine: dict[str, str] = {}  # call sid -> its caller set's key ("" none)
        self._salt: str | None = None
        client = link.client
        self._admit = client.register_script(_ADMIT)
        self._renew = client.register_script(_RENEW)
        self._count = client.register_script(_COUNT)

    @property
    def held(self) -> int:
        """This instance's admitted calls (what the heartbeat renews)."""
        return len(self._mine)

    def owned(self) -> list[str]:
        """The call sids this instance holds places for."""
        return list(self._mine)

    async def try_admit(self, call_sid: str, caller: str = "") -> Admission:
        """Take a place for ``call_sid`` (again: idempotent). ``caller`` is the raw number
        of the person on the other end ("" withheld: never limited); only its hash leaves."""
        link = self.link
        caller_key = ""
        if caller and self.max_per_caller:
            salt = await self._caller_salt()
            if salt is None:
                self._mine[call_sid] = ""  # counted in all once Redis is back
                return Admission(True, REDIS_UNAVAILABLE)
            caller_key = link.keys.cap_caller(caller_hash(salt, caller))
        keys = [link.keys.cap_calls, caller_key or link.keys.cap_calls]
        args: list[str | int] = [
            call_sid,
            self.max_calls,
            self.max_per_caller,
            _ms(link.options.lease_s),
            "1" if caller_key else "0",
        ]
        verdict = await link.run("admit", lambda: self._admit(keys=keys, args=args), None)
        if verdict is None:
            self._mine[call_sid] = caller_key
            return Admission(True, REDIS_UNAVAILABLE)
        if verdict == "calls":
            logger.warning(
                "call %s refused: the cluster is at capacity (%d calls)", call_sid, self.max_calls
            )
            return Admission(False, AT_CAPACITY)
        if verdict == "caller":
            logger.warning(
                "call %s refused: its caller has %d live calls in the cluster",
                call_sid,
                self.max_per_caller,
            )
            return Admission(False, CALLER_AT_CAPACITY)
        self._mine[call_sid] = caller_key
        return Admission(True, ADMITTED)

    async def release(self, call_sid: str) -> None:
        """Give the place back (no-op for a call this instance did not admit). On a Redis
        error the lease simply runs out."""
        if call_sid not in self._mine:
            return
        caller_key = self._mine.pop(call_sid)
        keys = self.link.keys

        async def release() -> None:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.cap_calls, call_sid)
                if caller_key:
                    pipe.zrem(caller_key, call_sid)
                await pipe.execute()

        await self.link.run("release", release, None)

    async def renew(self, *, force: bool = False) -> bool:
        """Extend the leases of this instance's calls (the heartbeat); False if Redis failed."""
        calls = list(self._mine.items())
        if not calls:
            return True
        keys = [self.link.keys.cap_calls]
        index: dict[str, int] = {}
        args: list[str | int] = [_ms(self.link.options.lease_s)]
        for call_sid, caller_key in calls:
            position = 0
            if caller_key:
                if caller_key not in index:
                    keys.append(caller_key)
                    index[caller_key] = len(keys)  # Lua counts from 1
                position = index[caller_key]
            args += [call_sid, position]
        done = await self.link.run(
            "renew caps", lambda: self._renew(keys=keys, args=args), None, force=force
        )
        return done is not None

    async def count(self, caller: str = "") -> int | None:
        """Live admitted calls in the cluster (of one caller, when given); None: unknown."""
        key = self.link.keys.cap_calls
        if caller:
            salt = await self._caller_salt()
            if salt is None:
                return None
            key = self.link.keys.cap_caller(caller_hash(salt, caller))
        counted = await self.link.run("count", lambda: self._count(keys=[key], args=[]), None)
        return None if counted is None else int(counted)

    async def _caller_salt(self, *, force: bool = False) -> str | None:
        """The cluster's salt for caller hashes, made by the first instance that needs it."""
        if self._salt is not None and not force:
            return self._salt
        key = self.link.keys.salt

        async def fetch() -> str | None:
            client = self.link.client
            await client.set(key, secrets.token_hex(16), nx=True)
            value = await client.get(key)
            return value if isinstance(value, str) else None

        salt = await self.link.run("caller salt", fetch, None, force=force)
        if salt is not None:
            self._salt = salt
        return salt

    async def refresh_salt(self) -> None:
        """Re-read the salt (the heartbeat): a flushed Redis gets one again, and every
        instance converges on it within one renew period."""
        await self._caller_salt(force=True)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
