"""Peers that stop reading are given up on within a set time, and counted."""

from __future__ import annotations

import asyncio

from bridge.inputs import HangUp
from bridge.metrics import Metrics
from bridge.playout import PhoneOut, SendAudio, SendMark
from bridge.softphone.leg import SLOW_BROWSER_S, SoftphoneLeg


def test_a_browser_that_stays_past_its_backlog_is_dropped_and_counted():
    async def main() -> None:
        sent: list[str] = []
        now = [0.0]
        backlog = [1000]

        async def emit(event: str, data: object) -> None:
            sent.append(event)

        async def disconnect() -> None:
            pass

        metrics = Metrics()
        leg = SoftphoneLeg(
            emit,
            disconnect,
            session_id="SP1",
            sample_rate=16000,
            metrics=metrics,
            idle_timeout_s=600.0,
            max_backlog=100,
            backlog=lambda: backlog[0],
            clock=lambda: now[0],
        )
        chunk: list[PhoneOut] = [SendAudio(b"\x01\x00" * 160), SendMark("1:item_a")]
        await leg.send(chunk)  # over the backlog: audio dropped, the mark still goes
        assert sent == ["mark"] and leg.dropped_audio == 1
        now[0] = SLOW_BROWSER_S / 2
        backlog[0] = 0  # it caught up: the clock starts again
        await leg.send(chunk)
        backlog[0] = 1000
        now[0] = SLOW_BROWSER_S
        await leg.send(chunk)
        now[0] = SLOW_BROWSER_S * 1.5 + 0.1
        await leg.send(chunk)
        assert metrics.peers_dropped["browser"] == 0  # past it for only half the time
        now[0] = SLOW_BROWSER_S * 2 + 0.1
        await leg.send(chunk)
        await leg.send(chunk)
        assert metrics.peers_dropped["browser"] == 1  # counted once
        assert leg._end == HangUp("browser stopped reading")

    asyncio.run(main())
