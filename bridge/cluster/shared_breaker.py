"""The model breaker, shared: when one instance opens it, every instance sees it open.

Owns one key, ``breaker:open`` (the opener's instance id, with a TTL of
``breaker_hold_s``), and each instance's cached view of it. It wraps this process's
:class:`bridge.breaker.ModelBreaker` without changing it:

- Failures are still counted locally (``threshold`` calls in a row on one instance open
  it); when the local breaker opens, the key is set, and kept alive (re-set every poll)
  for as long as the local breaker stays open. The local probe loop runs as before.
- When the local breaker closes (its probe, or a call, reached the model) the key is
  deleted and ``breaker:closes`` counted up: every instance closes, and one whose own
  breaker is open closes it too. A call that reaches the model on an instance that only
  saw the shared breaker open does the same (``ModelBreaker``'s "a call that reaches
  the model closes it").
- An opener that dies stops holding it open after ``breaker_hold_s`` (the TTL).
- :attr:`SharedBreaker.is_open` is "open here or open in the cluster". It is a plain
  attribute read, never a Redis round trip: a poll task refreshes the shared view every
  ``breaker_poll_s``. Redis down: the shared view counts as closed, the local one rules.

``on_change(is_open)`` (``Services._breaker_changed``: readiness, metrics) is called with
that effective state whenever it changes; it replaces the local breaker's own
``on_change``, which it is given at :meth:`SharedBreaker.attach`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.background import spawn
from bridge.breaker import ModelBreaker
from bridge.cluster.link import RedisLink

logger = logging.getLogger(__name__)

_CLUSTER = "(closed by another instance)"  # the "call" that closes a breaker from afar


class SharedBreaker:
    def __init__(self, link: RedisLink, local: ModelBreaker) -> None:
        self.link = link
        self.local = local
        self.shared_open = False  # the cluster's view, as of the last poll
        self.on_change: Callable[[bool], None] = local.on_change
        self._effective = local.is_open
        self._pending: set[asyncio.Task[None]] = set()
        self.polls = 0  # refreshes done (tests wait on it, never on time)
        self._closes_seen: int | None = None  # the cluster's count of closes, last read
        self._order = asyncio.Lock()  # publications reach Redis in the order they were made

    @classmethod
    def attach(cls, link: RedisLink, local: ModelBreaker) -> SharedBreaker:
        """Wrap ``local``: its ``on_change`` now goes through the shared view."""
        shared = cls(link, local)
        local.on_change = shared._local_changed
        return shared

    @property
    def is_open(self) -> bool:
        return self.local.is_open or self.shared_open

    def call_ended(self, call_sid: str, *, reached_model: bool, unreachable: bool) -> None:
        """``ModelBreaker.call_ended``, and a call that reached the model closes the
        cluster's breaker too."""
        self.local.call_ended(call_sid, reached_model=reached_model, unreachable=unreachable)
        if reached_model and not unreachable and self.shared_open and not self.local.is_open:
            logger.info("model breaker closed for the cluster: a call reached the model")
            self.shared_open = False
            spawn(self._pending, self._publish(False))
            self._notify()

    def failed(self, call_sid: str) -> bool:
        return self.local.failed(call_sid)

    async def poll(self) -> None:
        """Until cancelled: keep our opening alive, and refresh the cluster's view."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.link.options.breaker_poll_s)

    async def refresh(self) -> None:
        """One poll: read the cluster's breaker, follow a close made elsewhere, and keep
        the key alive while open here."""
        keys = self.link.keys

        async def read() -> tuple[bool, int]:
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.exists(keys.breaker)
                pipe.get(keys.breaker_closes)
                exists, closes = await pipe.execute()
            return bool(exists), int(closes or 0)

        state = await self.link.run("breaker read", read, None)
        seen = False  # Redis down: the local breaker rules
        if state is not None:
            seen, closes = state
            if self._closes_seen is None:
                self._closes_seen = closes
            elif closes > self._closes_seen:
                self._closes_seen = closes
                if self.local.is_open:
                    logger.info("model breaker closed: another instance reached the model")
                    # ModelBreaker's own path for "a call reached the model": it closes
                    # and resets its count (and _local_changed publishes the close).
                    self.local.call_ended(_CLUSTER, reached_model=True, unreachable=False)
            if self.local.is_open:
                await self._publish(True)
                seen = True
        if seen != self.shared_open:
            self.shared_open = seen
            if seen:
                logger.warning("model breaker open in the cluster: new calls get the fallback")
            else:
                logger.info("model breaker closed in the cluster")
        self.polls += 1
        self._notify()

    async def aclose(self) -> None:
        """Let the last publications through (stop calls it)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _local_changed(self, is_open: bool) -> None:
        self.shared_open = self.shared_open and is_open  # closing here closes for all
        spawn(self._pending, self._publish(is_open))
        self._notify()

    def _notify(self) -> None:
        effective = self.is_open
        if effective != self._effective:
            self._effective = effective
            self.on_change(effective)

    async def _publish(self, is_open: bool) -> None:
        async with self._order:
            await self._write(is_open)

    async def _write(self, is_open: bool) -> None:
        key = self.link.keys.breaker
        client = self.link.client
        if is_open:
            hold_ms = max(1, int(self.link.options.breaker_hold_s * 1000))

            async def open_() -> None:
                await client.set(key, self.link.instance_id, px=hold_ms)

            await self.link.run("breaker open", open_, None)
        else:

            async def close() -> None:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.delete(key)
                    pipe.incr(self.link.keys.breaker_closes)
                    _, closes = await pipe.execute()
                self._closes_seen = int(closes)

            await self.link.run("breaker close", close, None)
