"""Limits: live calls per caller (busy beyond the cap), new media streams and Socket.IO
connections per client address (token bucket; X-Forwarded-For only from trusted proxies)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.agents import Agent
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.limits import CallerCount, ConnectLimiter
from tests.e2e import Rig, rig, run_undisturbed, until
from tests.resilience.helpers import CALLER, voice
from tests.softphone.helpers import refusal
from tests.test_e2e_robustness import closed_within, stream


def test_caller_count_caps_each_caller_and_never_a_withheld_one():
    count = CallerCount(2)
    for _ in range(2):
        assert not count.full("+15551234567")
        count.add("+15551234567")
    assert count.full("+15551234567") and not count.full("+15557654321")
    count.add("")
    count.add("")
    assert not count.full("")
    count.remove("+15551234567")
    assert not count.full("+15551234567")
    count.remove("+15551234567")
    count.remove("+15551234567")  # more removes than adds: no negative count
    assert len(count) == 0
    assert not CallerCount(0).full("+15551234567")  # 0: no cap


def test_the_token_bucket_refills_at_its_rate_and_forgets_old_addresses():
    limiter = ConnectLimiter(rate=2.0, burst=3, max_addresses=2)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("a", 0.5)  # one token back after half a second
    assert not limiter.allow("a", 0.5)
    assert limiter.allow("b", 0.5) and limiter.allow("c", 0.5)
    assert len(limiter) == 2 and limiter.refused == 2  # "a" was the least recent: gone
    assert limiter.allow("a", 0.5)  # a forgotten address starts with a full bucket
    assert ConnectLimiter(rate=0.0, burst=1).allow("x", 0.0)  # 0: no limit


def test_a_caller_past_the_cap_gets_busy_and_its_number_is_never_logged(caplog):
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        async with rig(Settings(max_calls_per_caller=1)) as r:
            async with stream(r, 11) as s:
                for _ in range(5):
                    await s.media()
                await until(lambda: r.bridge.services.calls, "the call")
                busy = await voice(r, "CA" + "b" * 32)
                assert [(e.tag, e.get("reason")) for e in ET.fromstring(busy)] == [
                    ("Reject", "busy")
                ]
                other = await voice(r, "CA" + "c" * 32, caller="+15559990000")
                assert [e.tag for e in ET.fromstring(other)] == ["Connect"]
                await s.stop()
                await closed_within(s.ws)
            await until(lambda: not r.bridge.services.calls, "the call to end")
            again = await voice(r, "CA" + "d" * 32)
            assert [e.tag for e in ET.fromstring(again)] == ["Connect"]
            metrics = r.bridge.services.metrics
            assert metrics.limited["caller_cap"] == 1
            assert metrics.ended_by_outcome["rejected_busy"] == 1

    run_undisturbed(main())
    assert not [rec for rec in caplog.records if CALLER in rec.getMessage()]


async def open_media(r: Rig, headers: dict[str, str] | None = None) -> int | None:
    """Open a media stream handshake; None if accepted, else the refusal's HTTP status."""
    url = r.bridge.base_url.replace("http", "ws") + "/twilio/media"
    try:
        async with connect(url, additional_headers=headers or {}) as ws:
            await ws.close()
            return None
    except InvalidStatus as exc:
        return int(exc.response.status_code)


@pytest.mark.parametrize("trusted", [True, False])
def test_new_media_streams_are_rate_limited_per_address(trusted: bool):
    async def main() -> None:
        settings = Settings(
            connect_rate_per_ip=0.001,
            connect_burst_per_ip=2,
            trusted_proxies=("127.0.0.1",) if trusted else (),
        )
        async with rig(settings) as r:
            # The handshake is refused for its missing signature, after taking a token.
            assert [await open_media(r) for _ in range(2)] == [403, 403]
            refused = r.bridge.services.metrics.limited
            assert refused["connect_rate"] == 0
            assert await open_media(r) == 403
            assert refused["connect_rate"] == 1
            # Behind a trusted proxy, the client it names has its own bucket.
            await open_media(r, {"X-Forwarded-For": "203.0.113.9"})
            assert refused["connect_rate"] == (1 if trusted else 2)

    run_undisturbed(main())


def test_new_softphone_connections_are_rate_limited_per_address():
    async def main() -> None:
        settings = Settings(
            agents=(Agent(greeting=""),), connect_rate_per_ip=0.001, connect_burst_per_ip=1
        )
        async with running_bridge(settings) as bridge:
            url = bridge.base_url
            assert await refusal(url, headers={"Origin": url}) is None
            refused = await refusal(url, headers={"Origin": url})
            assert refused is not None and refused["data"]["code"] == "rate_limited"
            await until(lambda: not bridge.services.calls, "the first call to end")

    run_undisturbed(main())
