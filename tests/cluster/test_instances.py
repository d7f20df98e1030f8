"""Several bridges sharing one real Redis (``REDIS_URL``), over real sockets.

Each test gets its own Redis database number, so their keys never meet. The bridges run
the whole stack (``running_bridge``, or ``bridge serve`` as a process where one must be
killed); calls come from the Twilio simulator; the admin API is called over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bridge import guard
from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge, signed_settings
from bridge.local_agent import serve_local_agent
from bridge.sim import webhook
from bridge.sim.caller import simulate_call
from bridge.sim.errors import WebhookRejected
from bridge.sim.result import CallResult
from tests.cluster.helpers import RedisServer
from tests.e2e import bridge_serve
from tests.softphone.helpers import FakeBrowser

PATIENCE_S = 30.0
TOKEN = "admin-token-for-tests"
_databases = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis database of this test's own (keys and caps; pub/sub channels are global)."""
    return f"redis://127.0.0.1:{redis_server.port}/{next(_databases) % 16}"


async def eventually(fetch: Callable[[], Awaitable[Any]], holds: Callable[[Any], bool]) -> Any:
    """Poll ``fetch()`` until its value ``holds``; fail after ``PATIENCE_S``."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        value = await fetch()
        if holds(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last value: {value!r}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def bridges(count: int, redis_url: str, **changes: Any) -> AsyncIterator[list[RunningBridge]]:
    """``count`` signed bridges on one Redis, one secret, one local agent."""
    agent = await serve_local_agent("127.0.0.1", 0)
    settings = signed_settings(
        Settings(),
        redis_url=redis_url,
        admin_token=TOKEN,
        stream_token_secret="one-secret-for-the-cluster",
        **({"records_path": None} | changes),
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            running = [
                await stack.enter_async_context(running_bridge(settings, model_url=agent.url))
                for _ in range(count)
            ]
            yield running
    finally:
        await agent.close()


def call_on(bridge: RunningBridge, seconds: float, caller: str) -> asyncio.Task[CallResult]:
    """A simulated caller on ``bridge``: silence for ``seconds``, then it hangs up."""
    return asyncio.create_task(
        simulate_call(
            bridge.base_url,
            np.zeros(8000, dtype=np.int16),
            public_url=bridge.public_url,
            auth_token=bridge.auth_token,
            hangup_after_s=seconds,
            from_=caller,
        )
    )


async def listed_calls(base_url: str, state: str = "live") -> list[dict[str, Any]]:
    """The admin API's list of calls in ``state`` (live by default)."""
    async with httpx.AsyncClient(timeout=PATIENCE_S) as client:
        answer = await client.get(
            f"{base_url}/calls",
            params={"state": state},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    calls: list[dict[str, Any]] = answer.json()["calls"]
    return calls


def test_a_call_on_a_is_listed_and_hung_up_through_b(redis_url: str):
    async def main() -> None:
        async with bridges(2, redis_url) as (a, b):
            task = call_on(a, 60.0, "+15550001111")
            (listed,) = await eventually(lambda: listed_calls(b.base_url), lambda c: len(c) == 1)
            assert listed["state"] == "live" and listed["leg"] == "phone"
            assert listed["instance"] == a.services.cluster.instance_id  # type: ignore[union-attr]
            assert "0001111" not in listed["from"]  # masked in Redis as in the API
            # A lists it too, as its own call (full figures, no instance field).
            (own,) = await listed_calls(a.base_url)
            assert own["id"] == listed["id"] and "instance" not in own
            async with httpx.AsyncClient(timeout=PATIENCE_S) as client:  # the console's page
                page = await client.get(
                    f"{b.base_url}/calls/{listed['id']}",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            assert page.status_code == 200, page.text
            assert page.json()["state"] == "live" and page.json()["timeline"] == []

            async with httpx.AsyncClient(timeout=PATIENCE_S) as client:
                answer = await client.post(
                    f"{b.base_url}/calls/{listed['id']}/hangup",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                assert answer.status_code == 202, answer.text
                assert answer.json() == {"id": listed["id"], "state": "ending"}
                # A call no instance runs: 404 from either.
                missing = await client.post(
                    f"{b.base_url}/calls/CA{'0' * 32}/hangup",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                assert missing.status_code == 404
            result = await asyncio.wait_for(task, PATIENCE_S)
            assert result.closed_by != "caller"  # the bridge ended it, long before 60 s
            assert result.violations == []
            await eventually(lambda: listed_calls(b.base_url), lambda c: c == [])
            assert a.services.metrics.calls_failed == 0  # an operator's hang-up, not a failure

    asyncio.run(main())


def test_the_cluster_cap_refuses_the_call_past_max_calls(redis_url: str):
    async def main() -> None:
        async with bridges(2, redis_url, max_calls=2, max_calls_per_caller=1) as (a, b):
            first = call_on(a, 60.0, "+15550002001")
            second = call_on(b, 60.0, "+15550002002")
            await eventually(lambda: listed_calls(a.base_url), lambda c: len(c) == 2)
            # Each instance has one call, under its own MAX_CALLS; the cluster has two.
            assert len(a.services.calls) == len(b.services.calls) == 1
            for bridge in (a, b):
                with pytest.raises(WebhookRejected, match=r"no <Connect><Stream>"):
                    await simulate_call(
                        bridge.base_url,
                        np.zeros(800, dtype=np.int16),
                        public_url=bridge.public_url,
                        auth_token=bridge.auth_token,
                        from_="+15550002003",
                    )
            assert a.services.metrics.limited["cluster_cap"] == 1
            assert b.services.metrics.limited["cluster_cap"] == 1
            # The cap counts the cluster, not the instance: a place comes back when a call
            # ends anywhere.
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            await eventually(lambda: listed_calls(b.base_url), lambda c: len(c) == 1)
            third = call_on(b, 60.0, "+15550002003")
            await eventually(lambda: listed_calls(a.base_url), lambda c: len(c) == 2)
            assert len(b.services.calls) == 2
            for task in (second, third):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(main())


def test_the_per_caller_cap_counts_across_instances(redis_url: str):
    async def main() -> None:
        async with bridges(2, redis_url, max_calls_per_caller=1) as (a, b):
            first = call_on(a, 60.0, "+15550003001")
            await eventually(lambda: listed_calls(b.base_url), lambda c: len(c) == 1)
            with pytest.raises(WebhookRejected):
                await simulate_call(
                    b.base_url,
                    np.zeros(800, dtype=np.int16),
                    public_url=b.public_url,
                    auth_token=b.auth_token,
                    from_="+15550003001",
                )
            assert b.services.metrics.limited["cluster_cap"] == 1
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first

    asyncio.run(main())


def test_a_softphone_on_a_receives_an_event_emitted_on_b(redis_url: str):
    async def main() -> None:
        async with bridges(2, redis_url) as (a, b):
            browser = FakeBrowser(24000)
            await browser.connect(a.base_url)
            try:
                await browser.wait_for(lambda: browser.audio, "the greeting")
                sio = b.app.softphone.sio  # B's Socket.IO server, through the Redis manager
                notice = {"text": "maintenance at noon"}

                async def emitted() -> bool:
                    await sio.emit("notice", notice, namespace="/softphone")
                    return any(kind == "notice" for _, kind, _ in browser.events)

                await eventually(emitted, bool)  # A's listener may still be subscribing
                assert next(d for _, kind, d in browser.events if kind == "notice") == notice
            finally:
                await browser.close()

    asyncio.run(main())


def test_a_killed_instances_calls_leave_the_cap_within_the_lease(redis_url: str, tmp_path: Path):
    """A ``bridge serve`` process holding the cluster's only place is killed (SIGKILL: no
    goodbye to Redis); the place comes back when its lease runs out, and another instance
    takes the next call."""
    lease_s = 2.0

    async def main() -> None:
        with bridge_serve(
            tmp_path,
            REDIS_URL=redis_url,
            CLUSTER_LEASE_S=str(lease_s),
            MAX_CALLS="1",
            ADMIN_TOKEN=TOKEN,
        ) as (proc, base):
            async with bridges(1, redis_url, max_calls=1, cluster_lease_s=lease_s) as (b,):
                on_a = asyncio.create_task(
                    simulate_call(
                        base, np.zeros(8000, dtype=np.int16), hangup_after_s=60.0, from_="+1555"
                    )
                )
                await eventually(lambda: listed_calls(b.base_url), lambda c: len(c) == 1)
                with pytest.raises(WebhookRejected):  # A holds the cluster's only place
                    await simulate_call(
                        b.base_url,
                        np.zeros(800, dtype=np.int16),
                        public_url=b.public_url,
                        auth_token=b.auth_token,
                    )
                proc.send_signal(signal.SIGKILL)
                proc.wait(PATIENCE_S)
                killed = time.monotonic()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(on_a, PATIENCE_S)  # its socket died with it
                await eventually(lambda: listed_calls(b.base_url), lambda c: c == [])
                print(
                    f"the killed instance's call left the registry after "
                    f"{time.monotonic() - killed:.1f} s (lease {lease_s} s)"
                )
                result = await simulate_call(  # the place is free again
                    b.base_url,
                    np.zeros(800, dtype=np.int16),
                    public_url=b.public_url,
                    auth_token=b.auth_token,
                    hangup_after_s=0.5,
                )
                assert result.violations == [] and result.closed_by == "caller"

    asyncio.run(main())


def test_the_webhook_on_one_instance_and_the_media_stream_on_another(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
):
    """Behind one public URL the proxy may send the webhook to A and the stream to B: B
    accepts the stream token A minted (one ``STREAM_TOKEN_SECRET``)."""
    public = "https://bridge.example"

    async def main() -> None:
        async with bridges(2, redis_url, public_url=public) as (a, b):
            # The proxy in front: media streams for the public host go to B.
            b_host = b.base_url.removeprefix("http://")
            monkeypatch.setattr(
                webhook,
                "connect_url",
                lambda stream_url, base_url, public_url: stream_url.replace(
                    "wss://bridge.example", f"ws://{b_host}"
                ),
            )
            result = await simulate_call(
                a.base_url,  # the webhook reaches A, signed for the public URL
                np.zeros(8000, dtype=np.int16),
                public_url=public,
                auth_token=a.auth_token,
                hangup_after_s=1.0,
            )
            assert result.violations == [] and result.closed_by == "caller"
            assert a.services.metrics.calls_started == 0  # A only answered the webhook
            assert b.services.metrics.calls_started == 1  # B ran the call

    asyncio.run(main())


def test_instances_write_their_records_to_one_postgresql(redis_url: str, postgres: Any):
    """Calls on A and on B end up in one PostgreSQL: either instance's admin API has both."""

    async def main() -> None:
        database = postgres.create_database()
        async with bridges(2, redis_url, database_url=database) as (a, b):
            results = await asyncio.gather(
                *(
                    simulate_call(
                        bridge.base_url,
                        np.zeros(8000, dtype=np.int16),
                        public_url=bridge.public_url,
                        auth_token=bridge.auth_token,
                        hangup_after_s=1.0,
                        from_=f"+1555000400{i}",
                    )
                    for i, bridge in enumerate((a, b))
                )
            )
            assert all(r.closed_by == "caller" and not r.violations for r in results)

            for bridge in (a, b):  # each wrote its own; each reads both
                calls = await eventually(
                    lambda: listed_calls(bridge.base_url, "ended"),  # noqa: B023
                    lambda c: len(c) == 2,
                )
                assert {c["id"] for c in calls} == {r.call_sid for r in results}

    asyncio.run(main())


def test_a_stream_past_the_cluster_cap_is_closed_where_it_starts(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
):
    """Two webhooks may both see a place free: the stream that starts second is refused
    (1013) by the atomic admission, and nothing of it is kept."""

    async def no_early_busy(services: Any, caller: str) -> None:
        return None  # as if the webhook had raced the other call

    async def main() -> None:
        async with bridges(2, redis_url, max_calls=1) as (a, b):
            first = call_on(a, 60.0, "+15550005001")
            await eventually(lambda: listed_calls(b.base_url), lambda c: len(c) == 1)
            monkeypatch.setattr(guard, "webhook_busy", no_early_busy)
            result = await simulate_call(
                b.base_url,
                np.zeros(8000, dtype=np.int16),
                public_url=b.public_url,
                auth_token=b.auth_token,
                hangup_after_s=5.0,
            )
            assert result.closed_by != "caller" and result.close_code == 1013
            assert b.services.metrics.limited["cluster_cap"] == 1
            assert not b.services.calls and not b.services.recorders
            assert len(await listed_calls(a.base_url)) == 1  # only the first call is listed
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first

    asyncio.run(main())
