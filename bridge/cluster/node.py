"""``Cluster``: this instance's membership of the cluster, the one object the app holds.

Owns the Redis link (``bridge.cluster.link``) and the tasks that keep shared state true:
the heartbeat (renews the leases of this instance's admitted calls and registry entries
every ``renew_s``, and notices when Redis is back), the hang-up subscriber, and the
shared breaker's poll when one is attached. Its methods are the API the app calls;
each delegates to one module: caps (``bridge.cluster.caps``), live calls
(``bridge.cluster.registry``), remote hang-up (``bridge.cluster.hangup``), breaker
(``bridge.cluster.shared_breaker``).

Degrading, decided once here: a Redis error never refuses a call nor raises into the
call path. Admission fails open to the process's local caps (reason
``"redis unavailable"``, logged once as a warning with the password-free URL), listings
show nothing from other instances, a remote hang-up answers ``"unreachable"``, and the
shared breaker counts as closed. Leases make failing open safe: what this instance
admitted while Redis was away is counted there again by the first heartbeat that gets
through. Without ``REDIS_URL`` there is no ``Cluster`` at all (``from_settings`` gives
None) and a process behaves as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from bridge.breaker import ModelBreaker
from bridge.cluster.caps import Admission, ClusterCaps
from bridge.cluster.hangup import HangupBus, HangupHandler, HangupReply
from bridge.cluster.link import ClusterOptions, RedisLink, new_instance_id, raise_if_cancelled
from bridge.cluster.registry import CallRegistry, LiveCall
from bridge.cluster.shared_breaker import SharedBreaker
from bridge.config import Settings

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 2.0


class Cluster:
    """Shared state through Redis at ``url``. ``start()`` before use, ``stop()`` at the end."""

    def __init__(
        self,
        url: str,
        *,
        max_calls: int = 0,
        max_calls_per_caller: int = 0,
        on_hangup: HangupHandler | None = None,
        options: ClusterOptions | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.options = options or ClusterOptions()
        self.instance_id = instance_id or new_instance_id()
        self.link = RedisLink(url, self.options, self.instance_id)
        self.caps = ClusterCaps(self.link, max_calls, max_calls_per_caller)
        self.registry = CallRegistry(self.link)
        self.hangups = HangupBus(self.link, on_hangup)
        self.breaker: SharedBreaker | None = None
        self.beats = 0  # heartbeats done (tests wait on it, never on time)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        on_hangup: HangupHandler | None = None,
        options: ClusterOptions | None = None,
    ) -> Cluster | None:
        """The cluster of ``REDIS_URL`` with ``MAX_CALLS``/``MAX_CALLS_PER_CALLER`` as its
        cluster-wide caps, or None when ``REDIS_URL`` is not set."""
        if not settings.redis_url:
            return None
        return cls(
            settings.redis_url,
            max_calls=settings.max_calls,
            max_calls_per_caller=settings.max_calls_per_caller,
            on_hangup=on_hangup,
            options=options,
        )

    @property
    def healthy(self) -> bool:
        """Whether the last operation toward Redis worked."""
        return self.link.up

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the heartbeat and the hang-up subscriber. Never raises for Redis being
        down: it is logged, and the tasks keep trying."""
        if self._tasks:
            return
        pong = await self.link.run("ping", self.link.client.ping, None, force=True)
        if pong is not None:
            await self.caps.refresh_salt()
            logger.info(
                "cluster: instance %s joined redis at %s", self.instance_id, self.link.where
            )
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="cluster heartbeat"),
            asyncio.create_task(self.hangups.serve(), name="cluster hang-ups"),
        ]
        if self.breaker is not None:
            self._tasks.append(asyncio.create_task(self.breaker.poll(), name="cluster breaker"))
        if pong is not None:  # requests sent right after start must find us listening
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.op_timeout_s * 3):
                    await self.hangups.subscribed.wait()

    async def stop(self, *, release: bool = True) -> None:
        """Stop the tasks and close the link. ``release``: give back this instance's places
        and entries now; False leaves them to their leases (what a crash does)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
            for task in stuck:  # never hang a shutdown on a task that ignored its cancel
                logger.warning("cluster: task %r did not stop", task.get_name())
        if self.breaker is not None:
            await self.breaker.aclose()
        if release:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    for call_sid in self.registry.owned():
                        await self.registry.unregister(call_sid)
                    for call_sid in self.caps.owned():
                        await self.caps.release(call_sid)
        await self.link.close()

    def attach_breaker(self, local: ModelBreaker) -> SharedBreaker:
        """Share ``local`` (call before ``start``): see ``bridge.cluster.shared_breaker``."""
        self.breaker = SharedBreaker.attach(self.link, local)
        if self._tasks:
            self._tasks.append(asyncio.create_task(self.breaker.poll(), name="cluster breaker"))
        return self.breaker

    async def heartbeat(self) -> None:
        """One renewal of this instance's leases (the heartbeat task runs it every
        ``renew_s``; it tries even while Redis is known to be down)."""
        if not self.link.up:  # with nothing to renew, this is what notices Redis is back
            await self.link.run("ping", self.link.client.ping, None, force=True)
            if self.link.up:
                await self.caps.refresh_salt()
        await self.caps.renew(force=True)
        await self.registry.renew(force=True)
        if self.beats % 12 == 11:  # Redis may have been flushed: take its salt now and then
            await self.caps.refresh_salt()
        self.beats += 1

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.options.renew_s)
            try:
                await self.heartbeat()
            except Exception as exc:  # the heartbeat must outlive anything but a cancel
                raise_if_cancelled(exc)
                logger.exception("cluster heartbeat failed")

    # ---------------------------------------------------------------- calls

    async def try_admit(self, call_sid: str, caller: str = "") -> Admission:
        """``(ok, reason)``: a place for ``call_sid`` under the cluster's caps. ``caller``
        is the raw number (hashed before it reaches Redis; "" withheld: never limited)."""
        return await self.caps.try_admit(call_sid, caller)

    async def release(self, call_sid: str) -> None:
        await self.caps.release(call_sid)

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
        """List a live call of this instance for every instance (numbers are masked)."""
        return await self.registry.register(
            call_sid,
            leg=leg,
            agent=agent,
            started_at=started_at,
            direction=direction,
            from_number=from_number,
            to_number=to_number,
        )

    async def unregister(self, call_sid: str) -> None:
        await self.registry.unregister(call_sid)

    async def live_calls(self) -> list[LiveCall]:
        """The cluster's live calls, oldest first ([] when Redis is down)."""
        return await self.registry.live_calls()

    async def find(self, call_sid: str) -> LiveCall | None:
        return await self.registry.get(call_sid)

    async def request_hangup(self, call_sid: str, say: str | None = None) -> HangupReply:
        """End ``call_sid`` wherever it runs: ``"ending"`` (its owner is ending it),
        ``"not_found"`` (no such live call), ``"unreachable"`` (owner or Redis silent)."""
        entry = await self.registry.get(call_sid)
        if entry is None:
            return "unreachable" if not self.link.up else "not_found"
        return await self.hangups.request(entry.instance, call_sid, say)
