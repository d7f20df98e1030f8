"""Redis unreachable: calls are admitted on the local caps, logged once, password-free;
and when Redis comes back, what was admitted meanwhile is counted there."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.breaker import ModelBreaker
from bridge.cluster import ADMITTED, REDIS_UNAVAILABLE, Cluster, ClusterOptions, redact_url
from tests.cluster.helpers import FAST, free_port, start_redis, until

PASSWORD = "s3cret-pw"


def test_redact_url_hides_the_password():
    assert redact_url(f"redis://:{PASSWORD}@db.example:6380/0") == "redis://:***@db.example:6380/0"
    assert redact_url(f"rediss://user:{PASSWORD}@[::1]/1") == "rediss://user:***@[::1]/1"
    assert redact_url("redis://localhost:6379") == "redis://localhost:6379"


def test_unreachable_redis_fails_open_to_the_local_caps(
    caplog: pytest.LogCaptureFixture, prefix: str
):
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    caplog.set_level(logging.INFO, logger="bridge.cluster")

    async def main() -> None:
        options = ClusterOptions(lease_s=2.0, renew_s=0.3, prefix=prefix)
        cluster = Cluster(url, max_calls=1, max_calls_per_caller=1, options=options)
        shared = cluster.attach_breaker(ModelBreaker(3, 60.0))
        await cluster.start()  # does not raise
        try:
            assert not cluster.healthy
            assert await cluster.try_admit("CA1", "+15551234567") == (True, REDIS_UNAVAILABLE)
            assert await cluster.try_admit("CA2", "+15551234567") == (True, REDIS_UNAVAILABLE)
            started = datetime.now(UTC)
            entry = await cluster.register("CA1", leg="phone", agent="a", started_at=started)
            assert entry.instance == cluster.instance_id
            assert await cluster.live_calls() == []
            assert await cluster.request_hangup("CA9") == "unreachable"
            await shared.refresh()
            assert not shared.is_open
            await cluster.release("CA1")
        finally:
            await cluster.stop()

    asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings, "the outage must be logged"
    assert "unreachable" in warnings[0].getMessage()
    assert "redis://:***@127.0.0.1" in warnings[0].getMessage()
    assert len([r for r in warnings if "unreachable (" in r.getMessage()]) == 1  # once
    assert PASSWORD not in caplog.text


def test_calls_admitted_while_redis_was_down_count_once_it_is_back(
    redis_binary: str, tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    caplog.set_level(logging.INFO, logger="bridge.cluster")

    async def main() -> None:
        options = ClusterOptions(lease_s=FAST.lease_s, renew_s=FAST.renew_s, prefix=prefix)

        async def end(call_sid: str, say: str | None) -> bool:
            return call_sid == "CA1"

        a = Cluster(url, max_calls=2, options=options, instance_id="instance-a", on_hangup=end)
        await a.start()
        assert await a.try_admit("CA1") == (True, REDIS_UNAVAILABLE)
        started = datetime.now(UTC)
        await a.register("CA1", leg="phone", agent="default", started_at=started)
        server = await asyncio.to_thread(start_redis, redis_binary, tmp_path, port)
        b = Cluster(url, max_calls=2, options=options, instance_id="instance-b")
        try:
            await b.start()

            async def counted() -> bool:
                return await b.caps.count() == 1 and len(await b.live_calls()) == 1

            await until(counted, "A's heartbeat to count CA1 in Redis")
            assert a.healthy
            assert await b.try_admit("CB1") == (True, ADMITTED)
            assert (await b.try_admit("CB2")).ok is False
            # A's hang-up subscriber came back with Redis.
            await until(lambda: _is(a.hangups.subscribed.is_set()), "A to subscribe again")
            assert await b.request_hangup("CA1") == "ending"
        finally:
            await a.stop()
            await b.stop()
            await asyncio.to_thread(server.stop)

    asyncio.run(main())
    assert "reachable again" in caplog.text


async def _is(value: bool) -> bool:
    return value
