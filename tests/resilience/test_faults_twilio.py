"""Faults on the Twilio side of a call, thrown by a loopback TCP proxy between the
simulated caller and the bridge (``tests.resilience.faults``): what the caller
experiences, and that a dead Twilio socket ends its call and its model session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.sim import messages
from bridge.sim.caller import simulate_call
from bridge.sim.webhook import sign
from tests.e2e import Rig, fixture, rig, run_undisturbed, until
from tests.resilience.faults import FaultProxy
from tests.resilience.helpers import ACCOUNT
from tests.test_e2e_robustness import Stream, open_sessions, twiml_for
from tests.test_reconnect import RATE, heard_after, unexpected_errors

# A Twilio socket that sends nothing for this long is dead (Twilio sends every 20 ms).
FAST = Settings(media_idle_timeout_s=1.5, media_ping_interval_s=0.5, media_ping_timeout_s=1.0)


def port_of(r: Rig) -> int:
    return int(r.bridge.base_url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def stream_through(r: Rig, proxy: FaultProxy, n: int) -> AsyncIterator[Stream]:
    """A started media stream whose socket runs through ``proxy``."""
    call_sid = f"CA{n:032d}"
    url, params = await twiml_for(r, call_sid)
    headers = {"X-Twilio-Signature": sign(r.bridge.auth_token or "", url, {})}
    async with connect(
        f"ws://127.0.0.1:{proxy.port}/twilio/media", additional_headers=headers
    ) as ws:
        s = Stream(ws, call_sid, f"MZ{n:032d}")
        await ws.send(messages.connected())
        await ws.send(
            messages.start(
                1,
                stream_sid=s.stream_sid,
                account_sid=ACCOUNT,
                call_sid=call_sid,
                custom_parameters=params,
            )
        )
        yield s


async def live_call(r: Rig, proxy: FaultProxy, s: Stream) -> None:
    for _ in range(10):
        await s.media()
    await until(lambda: r.bridge.services.calls and open_sessions(r), "the call and its model")


@pytest.mark.parametrize("fault", ["stall", "drop", "reset", "truncate"])
def test_a_dead_twilio_socket_ends_its_call_and_model_session_and_no_other(fault, caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig(FAST) as r, FaultProxy(port_of(r)) as proxy:
            services = r.bridge.services
            async with stream_through(r, proxy, 1) as s:
                await live_call(r, proxy, s)
                if fault == "stall":
                    proxy.stall()  # half-open: nothing moves, nothing closes
                elif fault == "drop":
                    await proxy.drop()
                elif fault == "reset":
                    await proxy.reset()
                else:
                    proxy.truncate_next()
                    with contextlib.suppress(Exception):
                        await s.media()  # half of this frame reaches the bridge
                await until(lambda: not services.calls, "the call to end")
                await until(lambda: not open_sessions(r), "its model session to close")
            assert services.metrics.peers_dropped["twilio"] == 1
            assert services.metrics.calls_started == 1

    run_undisturbed(main())
    messages_ = [rec.getMessage() for rec in caplog.records]
    assert not [m for m in messages_ if "internal error" in m]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_a_slow_then_stalled_twilio_link_costs_the_caller_a_gap_not_the_call():
    """50 ms of delay each way, and the link stalled for a second mid-call (a network
    hiccup): the call goes on and the caller's next utterance is echoed."""

    async def main() -> None:
        audio = fixture("caller-hello.wav")
        async with rig(Settings(media_idle_timeout_s=10.0)) as r:
            async with FaultProxy(port_of(r)) as proxy:
                proxy.delay_s = 0.05
                loop = asyncio.get_running_loop()
                stalled: list[float] = []

                def stall_after_the_greeting(call: Call, batch: list[CallEvent]) -> None:
                    for e in batch:
                        if e.kind == "transcript" and not stalled:
                            stalled.append(loop.time())
                            proxy.stall()
                            loop.call_later(1.0, proxy.resume)

                r.bridge.services.observers.append(stall_after_the_greeting)
                result = await simulate_call(
                    proxy.url,
                    audio,
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    tail_s=3.0,
                )
            sessions = list(r.agent.sessions)
            metrics = r.bridge.services.metrics
        assert stalled, "the fault was thrown"
        assert result.closed_by == "caller"
        assert metrics.calls_failed == 0 and metrics.peers_dropped["twilio"] == 0
        assert unexpected_errors(sessions) == []  # no truncate errors
        assert heard_after(audio[int(4.6 * RATE) : int(8.8 * RATE)], result, 9.0) > 0.9

    run_undisturbed(main())
