"""The cluster's live calls and remote hang-up, between two instances on a real Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.cluster.helpers import RedisServer, all_redis_text, two_instances

CALLER = "+15551234567"
CALLED = "+15557654321"
STARTED = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def test_a_call_registered_on_a_is_listed_from_b_with_masked_numbers(
    redis_server: RedisServer, prefix: str
):
    async def main() -> None:
        async with two_instances(redis_server.url, prefix) as (a, b):
            await a.register(
                "CA1", leg="phone", agent="sales", started_at=STARTED,
                from_number=CALLER, to_number=CALLED,
            )  # fmt: skip
            await b.register("CA2", leg="softphone", agent="default", started_at=STARTED)
            listed = await b.live_calls()
            assert [(c.call_sid, c.instance) for c in listed] == [
                ("CA1", "instance-a"),
                ("CA2", "instance-b"),
            ]
            first = listed[0]
            assert (first.leg, first.agent, first.direction) == ("phone", "sales", "inbound")
            assert first.started_at == STARTED.isoformat()
            assert (first.from_, first.to) == ("***4567", "***4321")
            assert (await b.find("CA1")) == first
            stored = await all_redis_text(redis_server.url)
            assert "CA1" in stored and "4567" in stored  # the masked form only
            assert CALLER not in stored and CALLER[1:] not in stored and "5551234" not in stored

            await a.unregister("CA1")
            assert [c.call_sid for c in await b.live_calls()] == ["CA2"]
            assert await b.find("CA1") is None

    asyncio.run(main())


def test_b_hangs_up_a_call_of_a_and_hears_the_answer(redis_server: RedisServer, prefix: str):
    asked: list[tuple[str, str | None]] = []

    async def end_on_a(call_sid: str, say: str | None) -> bool:
        asked.append((call_sid, say))
        return call_sid == "CA1"  # CA-gone was listed, but has just ended here

    async def main() -> None:
        async with two_instances(redis_server.url, prefix, handlers=(end_on_a, None)) as (a, b):
            await a.register("CA1", leg="phone", agent="default", started_at=STARTED)
            await a.register("CA-gone", leg="phone", agent="default", started_at=STARTED)

            assert await b.request_hangup("CA1", say="Goodbye") == "ending"
            assert asked == [("CA1", "Goodbye")]
            assert await b.request_hangup("CA-gone") == "not_found"
            assert asked[-1] == ("CA-gone", None)
            assert await b.request_hangup("CA-never") == "not_found"  # not in the registry
            assert await a.request_hangup("CA1") == "ending"  # the owner asks itself
            assert len(asked) == 3

    asyncio.run(main())


def test_hangup_of_a_call_whose_instance_died_is_unreachable(
    redis_server: RedisServer, prefix: str
):
    async def main() -> None:
        async with two_instances(redis_server.url, prefix) as (a, b):
            await a.register("CA1", leg="phone", agent="default", started_at=STARTED)
            await a.stop(release=False)  # its entry stays until the lease ends
            assert await b.find("CA1") is not None
            assert await b.request_hangup("CA1") == "unreachable"

    asyncio.run(main())


def test_a_failing_handler_or_a_stray_message_does_not_stop_the_subscriber(
    redis_server: RedisServer, prefix: str
):
    calls: list[str] = []

    async def flaky(call_sid: str, say: str | None) -> bool:
        calls.append(call_sid)
        if call_sid == "CA-boom":
            raise RuntimeError("handler bug")
        return True

    async def main() -> None:
        async with two_instances(redis_server.url, prefix, handlers=(flaky, None)) as (a, b):
            for call_sid in ("CA-boom", "CA1"):
                await a.register(call_sid, leg="phone", agent="default", started_at=STARTED)
            channel = a.hangups.channel
            await b.link.client.publish(channel, "not json")
            await b.link.client.publish(channel, '{"call_sid": "CA1", "reply": "elsewhere"}')
            assert await b.request_hangup("CA-boom") == "not_found"
            assert await b.request_hangup("CA1") == "ending"
            assert calls == ["CA-boom", "CA1"]  # the stray messages reached no handler

    asyncio.run(main())
