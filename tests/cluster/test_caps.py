"""Cluster-wide caps with leases, between two instances on a real Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bridge.cluster import ADMITTED, AT_CAPACITY, CALLER_AT_CAPACITY, Admission
from tests.cluster.helpers import FAST, RedisServer, all_redis_text, two_instances, until

CALLER = "+15551234567"
OTHER = "+15559876543"


def test_the_cap_counts_calls_on_every_instance(redis_server: RedisServer, prefix: str):
    async def main() -> None:
        async with two_instances(redis_server.url, prefix, max_calls=3) as (a, b):
            assert await a.try_admit("CA1") == Admission(True, ADMITTED)
            assert await a.try_admit("CA2") == (True, ADMITTED)
            assert await b.try_admit("CB1") == (True, ADMITTED)
            assert await b.try_admit("CB2") == (False, AT_CAPACITY)
            assert await a.try_admit("CA3") == (False, AT_CAPACITY)
            assert await a.try_admit("CA1") == (True, ADMITTED)  # again: still its place
            assert await b.caps.count() == 3

            await a.release("CA2")
            assert await b.try_admit("CB2") == (True, ADMITTED)
            assert await a.try_admit("CA3") == (False, AT_CAPACITY)
            assert await a.caps.count() == 3

    asyncio.run(main())


def test_the_per_caller_cap_counts_a_callers_calls_on_every_instance(
    redis_server: RedisServer, prefix: str
):
    async def main() -> None:
        async with two_instances(redis_server.url, prefix, max_calls_per_caller=2) as (a, b):
            assert await a.try_admit("CA1", CALLER) == (True, ADMITTED)
            assert await b.try_admit("CB1", CALLER) == (True, ADMITTED)
            assert await b.try_admit("CB2", CALLER) == (False, CALLER_AT_CAPACITY)
            assert await a.try_admit("CA2", CALLER) == (False, CALLER_AT_CAPACITY)
            assert await a.try_admit("CA2", OTHER) == (True, ADMITTED)
            for n in range(5):  # a withheld number is never limited
                assert await b.try_admit(f"CW{n}", "") == (True, ADMITTED)
            assert await a.caps.count(CALLER) == 2
            assert await b.caps.count(OTHER) == 1

            stored = await all_redis_text(redis_server.url)
            assert "cap:caller:" in stored
            for number in (CALLER, OTHER):
                assert number[-7:] not in stored  # hashed, never the number

            await b.release("CB1")
            assert await a.try_admit("CA3", CALLER) == (True, ADMITTED)

    asyncio.run(main())


def test_a_killed_instances_calls_stop_counting_within_the_lease(
    redis_server: RedisServer, prefix: str
):
    start = datetime.now(UTC)

    async def main() -> None:
        async with two_instances(redis_server.url, prefix, max_calls=3) as (a, b):
            for call_sid in ("CA1", "CA2"):
                assert (await a.try_admit(call_sid, CALLER)).ok
                await a.register(call_sid, leg="phone", agent="default", started_at=start)
            assert (await b.try_admit("CB1")).ok
            await b.register("CB1", leg="phone", agent="default", started_at=start)
            assert await b.try_admit("CB2") == (False, AT_CAPACITY)

            await a.stop(release=False)  # killed: no heartbeat, no release, no connection

            async def a_is_gone() -> bool:
                return await b.caps.count() == 1 and len(await b.live_calls()) == 1

            await until(a_is_gone, "A's calls to expire")
            # B's own call outlives its first lease: its heartbeat renews it.
            beats = b.beats
            await until(
                lambda: _true(b.beats >= beats + 1 + FAST.lease_s / FAST.renew_s),
                "B's heartbeat to run past a lease",
            )
            assert [c.call_sid for c in await b.live_calls()] == ["CB1"]
            assert await b.caps.count() == 1
            assert await b.caps.count(CALLER) == 0
            assert await b.try_admit("CB2") == (True, ADMITTED)
            assert await b.try_admit("CB3") == (True, ADMITTED)
            assert await b.try_admit("CB4") == (False, AT_CAPACITY)

    asyncio.run(main())


async def _true(value: bool) -> bool:
    return value


def test_racing_admissions_on_two_instances_never_exceed_the_cap(
    redis_server: RedisServer, prefix: str
):
    async def main() -> None:
        url = redis_server.url
        async with two_instances(url, prefix, max_calls=5, max_calls_per_caller=3) as (a, b):
            verdicts = await asyncio.gather(
                *(
                    (a if n % 2 else b).try_admit(f"CR{n}", CALLER if n < 10 else "")
                    for n in range(20)
                )
            )
            admitted = [n for n, verdict in enumerate(verdicts) if verdict.ok]
            assert len(admitted) == 5
            assert len([n for n in admitted if n < 10]) <= 3
            assert await a.caps.count() == 5
            assert a.caps.held + b.caps.held == 5

    asyncio.run(main())
