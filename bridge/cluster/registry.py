"""The cluster's live calls: who is on which instance, for the admin API and hang-ups.

Owns ``live`` (a sorted set of call sids scored by the end of their lease, on the Redis
server's clock) and one ``live:<sid>`` key per call holding a :class:`LiveCall` as JSON
with the same lease (``PX``). This instance's entries are kept here as well, and
:meth:`CallRegistry.renew` (the heartbeat) writes them again with a fresh lease, so an
entry lost to a Redis blink comes back and a crashed instance's calls vanish from
:meth:`CallRegistry.live_calls` within one lease.

An entry carries what ``GET /calls`` shows of a call that is not on this instance: ids,
leg, direction, agent, start time and the owner instance. Numbers are stored masked
(``bridge.privacy.mask_number``, like call records and the admin API): never in plain.

It ends no call: a hang-up goes to the owner (``bridge.cluster.hangup``). When Redis
cannot be reached, listings are empty (logged by the link) and callers show their own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime

from bridge.cluster.link import RedisLink
from bridge.privacy import mask_number

logger = logging.getLogger(__name__)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] the index, KEYS[2..] the entries' keys; ARGV[1] lease ms, ARGV[2..] (sid, json).
_PUT = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
for i = 2, #KEYS do
  local sid, entry = ARGV[2 * i - 2], ARGV[2 * i - 1]
  redis.call('SET', KEYS[i], entry, 'PX', lease)
  redis.call('ZADD', KEYS[1], now + lease, sid)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], lease)
return #KEYS - 1
"""
)

# KEYS[1] the index; ARGV[1] the entries' key prefix. The live entries' JSON.
_LIST = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local entry = redis.call('GET', ARGV[1] .. sid)
  if entry then out[#out + 1] = entry end
end
return out
"""
)


@dataclass(frozen=True)
class LiveCall:
    """A live call as every instance sees it. ``from_``/``to`` are masked."""

    call_sid: str
    leg: str  # "phone", "softphone", …
    agent: str
    direction: str  # "inbound" / "outbound"
    started_at: str  # ISO 8601, UTC
    from_: str
    to: str
    instance: str  # the instance that runs it (its hang-up channel)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> LiveCall | None:
        try:
            data = json.loads(raw)
            return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError):
            return None


class CallRegistry:
    """Register this instance's calls; list and look up the cluster's."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._mine: dict[str, LiveCall] = {}
        self._put = link.client.register_script(_PUT)
        self._list = link.client.register_script(_LIST)

    @property
    def held(self) -> int:
        return len(self._mine)

    def owned(self) -> list[str]:
        """The call sids this instance has listed."""
        return list(self._mine)

    async def register(
        self,
        call_sid: str,
        *,
        leg: str,
        agent: str,
        started_at: datetime,
        direction: str = "inbound",
        from_number: str = "",
        to_number: str = "",
    ) -> LiveCall:
        """Publish a call of this instance. Numbers are raw here and masked before storing.
        On a Redis error the entry is kept and written by the next heartbeat."""
        entry = LiveCall(
            call_sid=call_sid,
            leg=leg,
            agent=agent,
            direction=direction,
            started_at=started_at.isoformat(),
            from_=mask_number(from_number),
            to=mask_number(to_number),
            instance=self.link.instance_id,
        )
        self._mine[call_sid] = entry
        await self._write([entry])
        return entry

    async def unregister(self, call_sid: str) -> None:
        if self._mine.pop(call_sid, None) is None:
            return
        keys = self.link.keys

        async def remove() -> None:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.delete(keys.live_call(call_sid))
                pipe.zrem(keys.live, call_sid)
                await pipe.execute()

        await self.link.run("unregister", remove, None)

    async def renew(self, *, force: bool = False) -> bool:
        """Write this instance's entries with a fresh lease; False if Redis failed."""
        return await self._write(list(self._mine.values()), force=force)

    async def live_calls(self) -> list[LiveCall]:
        """Every live call in the cluster, oldest first ([] when Redis cannot be reached)."""
        keys = self.link.keys
        raw = await self.link.run(
            "list calls",
            lambda: self._list(keys=[keys.live], args=[keys.live_call("")]),
            None,
        )
        if raw is None:
            return []
        calls = [entry for item in raw if (entry := LiveCall.from_json(item)) is not None]
        return sorted(calls, key=lambda entry: (entry.started_at, entry.call_sid))

    async def get(self, call_sid: str) -> LiveCall | None:
        """One live call by sid, wherever it runs (None: unknown, or Redis down)."""
        if call_sid in self._mine:
            return self._mine[call_sid]
        key = self.link.keys.live_call(call_sid)

        async def read() -> str | None:
            value = await self.link.client.get(key)
            return value if isinstance(value, str) else None

        raw = await self.link.run("get call", read, None)
        return None if raw is None else LiveCall.from_json(raw)

    async def _write(self, entries: list[LiveCall], *, force: bool = False) -> bool:
        if not entries:
            return True
        keys = self.link.keys
        redis_keys = [keys.live, *(keys.live_call(e.call_sid) for e in entries)]
        args: list[str | int] = [max(1, int(self.link.options.lease_s * 1000))]
        for entry in entries:
            args += [entry.call_sid, entry.to_json()]
        done = await self.link.run(
            "register calls", lambda: self._put(keys=redis_keys, args=args), None, force=force
        )
        return done is not None
