"""The runner's pumping, with a leg whose sends yield the way a busy socket does."""

from __future__ import annotations

import asyncio

from bridge.agents import Agent
from bridge.call import Call, CallEvent
from bridge.inputs import CallerAudio, Dtmf, HangUp, Interrupt, TextInput
from bridge.leg import Ending
from bridge.metrics import Metrics
from bridge.playout import ClearPlayback, Playout, SendAudio
from bridge.runner import CallRunner
from bridge.uplink import UplinkPath


class SlowLeg:
    """Every message waits for the transport, as under write backpressure."""

    def __init__(self) -> None:
        self.wire: list[object] = []

    async def send(self, outs: list[object]) -> None:
        for out in outs:
            await asyncio.sleep(0)
            self.wire.append(out)


class NullModel:
    async def send(self, message: str) -> None:
        pass


def make_runner() -> tuple[CallRunner, SlowLeg]:
    call = Call(
        agent=Agent(greeting="", local_barge_in=False),
        call_sid="CA1",
        uplink=UplinkPath("mulaw", 8000),
        downlink_codec="mulaw",
        downlink_rate=8000,
        playout=Playout(8.0, lead_ms=160),
        now=0.0,
        greet=False,
    )
    leg = SlowLeg()
    runner = CallRunner(call, leg, None, metrics=Metrics())  # type: ignore[arg-type]
    runner.model = NullModel()  # type: ignore[assignment]
    return runner, leg


def test_nothing_queued_before_a_clear_reaches_the_phone_after_it():
    async def main() -> None:
        runner, leg = make_runner()
        call = runner.call
        call.playout.push("A", 0, b"\x01" * 8 * 400, 400)
        call._pull(0.0)
        pacing = asyncio.create_task(runner.flush())  # 4 chunks and their marks
        await asyncio.sleep(0)
        # A barge-in from the leg reader meanwhile.
        await asyncio.gather(pacing, runner.feed(Interrupt(), 0.01))
        clear_at = next(i for i, o in enumerate(leg.wire) if isinstance(o, ClearPlayback))
        assert not any(isinstance(o, SendAudio) for o in leg.wire[clear_at:])

    asyncio.run(main())


def test_the_pacer_wakes_when_audio_is_queued_behind_a_full_buffer():
    async def main() -> None:
        runner, leg = make_runner()
        call = runner.call
        pacer = asyncio.create_task(runner._pacer())
        await asyncio.sleep(0.01)  # idle: nothing to pace
        call.playout.push("A", 0, b"\x01" * 8 * 600, 600)  # more than the lead
        call._pull(runner.clock())
        await runner.flush()
        await asyncio.sleep(0.3)  # no echo comes back; the schedule alone paces
        pacer.cancel()
        sent_ms = sum(len(o.payload) for o in leg.wire if isinstance(o, SendAudio)) / 8
        assert sent_ms >= 160 + 240, sent_ms  # the lead, then ~300 ms of paced release

    asyncio.run(main())


def test_feed_is_the_one_way_into_the_call():
    async def main() -> None:
        runner, leg = make_runner()
        call = runner.call
        seen: list[CallEvent] = []
        runner.observers.append(lambda _call, events: seen.extend(events))
        assert await runner.feed(CallerAudio(b"\xff" * 160), 0.0) is None
        await runner.feed(Dtmf("5"), 0.02)
        await runner.feed(TextInput("Hello?"), 0.04)
        call.playout.push("A", 0, b"\x01" * 8 * 400, 400)
        call._pull(0.05)
        await runner.feed(Interrupt(), 0.06)
        assert runner.metrics.frames_in == 1
        assert sum(runner.metrics.clear.counts) == 1  # the interrupt's clear went out
        assert isinstance(leg.wire[-1], ClearPlayback)
        assert [e.kind for e in seen][:2] == ["dtmf", "user_text"]
        assert await runner.feed(HangUp("caller hung up"), 0.08) == Ending("caller hung up")
        assert call.closed == "caller hung up"

    asyncio.run(main())
