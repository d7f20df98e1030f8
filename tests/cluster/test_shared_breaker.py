"""The model breaker shared through Redis: opened on A, open on B; closed together."""

from __future__ import annotations

import asyncio

from bridge.breaker import ModelBreaker
from tests.cluster.helpers import RedisServer, two_instances, until


async def _is(value: bool) -> bool:
    return value


def test_a_breaker_opened_on_a_is_open_on_b_and_closes_with_a(
    redis_server: RedisServer, prefix: str
):
    seen_a: list[bool] = []
    seen_b: list[bool] = []

    async def main() -> None:
        local_a = ModelBreaker(1, 60.0, seen_a.append)
        local_b = ModelBreaker(1, 60.0, seen_b.append)
        async with two_instances(redis_server.url, prefix) as (a, b):
            shared_a = a.attach_breaker(local_a)
            shared_b = b.attach_breaker(local_b)
            assert not shared_a.is_open and not shared_b.is_open

            shared_a.call_ended("CA1", reached_model=False, unreachable=True)
            assert local_a.is_open and shared_a.is_open and seen_a == [True]
            await until(lambda: _is(shared_b.is_open), "B to see the breaker open")
            assert not local_b.is_open  # B counted no failure: it follows the cluster
            assert seen_b == [True]  # B's readiness/metrics hear it once
            assert shared_b.failed("CA1") is False and shared_a.failed("CA1") is True

            # A's probe (or a call on A) reaches the model: the cluster closes.
            shared_a.call_ended("CA2", reached_model=True, unreachable=False)
            assert not shared_a.is_open and seen_a == [True, False]
            await until(lambda: _is(not shared_b.is_open), "B to see the breaker closed")
            assert seen_b == [True, False]

    asyncio.run(main())


def test_a_call_reaching_the_model_on_b_closes_the_breaker_for_the_cluster(
    redis_server: RedisServer, prefix: str
):
    async def main() -> None:
        local_a_changes: list[bool] = []
        async with two_instances(redis_server.url, prefix) as (a, b):
            shared_a = a.attach_breaker(ModelBreaker(1, 60.0, local_a_changes.append))
            shared_b = b.attach_breaker(ModelBreaker(1, 60.0))
            shared_a.call_ended("CA1", reached_model=False, unreachable=True)
            await until(lambda: _is(shared_b.is_open), "B to see the breaker open")

            shared_b.call_ended("CB1", reached_model=True, unreachable=False)
            assert not shared_b.is_open
            # The model answers: A closes its own breaker too, without waiting for a probe.
            await until(lambda: _is(not shared_a.local.is_open), "A's breaker to close")
            assert not shared_a.is_open and local_a_changes == [True, False]
            polls = shared_a.polls
            await until(lambda: _is(shared_a.polls >= polls + 3), "A to poll again")
            await shared_b.refresh()
            assert not shared_b.is_open  # and A's polls did not open it again

    asyncio.run(main())


def test_a_dead_openers_breaker_closes_after_the_hold(redis_server: RedisServer, prefix: str):
    async def main() -> None:
        async with two_instances(redis_server.url, prefix) as (a, b):
            shared_a = a.attach_breaker(ModelBreaker(1, 60.0))
            shared_b = b.attach_breaker(ModelBreaker(1, 60.0))
            shared_a.call_ended("CA1", reached_model=False, unreachable=True)
            await until(lambda: _is(shared_b.is_open), "B to see the breaker open")
            await a.stop(release=False)  # the opener dies with its breaker open
            await until(lambda: _is(not shared_b.is_open), "the hold to run out")

    asyncio.run(main())
