"""Faults on the model socket the local agent's switches do not throw (latency, a TCP
reset, a frame cut in half), through the loopback proxy: the call goes on, the new
session gets the conversation, and no truncate error comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.harness import running_bridge, signed_settings
from bridge.local_agent import serve_local_agent
from bridge.sim.caller import simulate_call
from tests.e2e import Rig, fixture, run_undisturbed
from tests.resilience.faults import FaultProxy
from tests.test_reconnect import RATE, heard_after, unexpected_errors


@contextlib.asynccontextmanager
async def model_behind_proxy() -> AsyncIterator[tuple[Rig, FaultProxy]]:
    agent = await serve_local_agent("127.0.0.1", 0)
    try:
        async with FaultProxy(agent.port) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}/v1/realtime"
            async with running_bridge(signed_settings(Settings()), model_url=url) as bridge:
                yield Rig(bridge, agent), proxy
    finally:
        await agent.close()


@pytest.mark.parametrize("fault", ["delay", "reset", "truncate"])
def test_a_model_socket_fault_after_the_greeting_costs_the_call_nothing(fault):
    async def main() -> None:
        audio = fixture("caller-hello.wav")
        async with model_behind_proxy() as (r, proxy):
            thrown: list[asyncio.Task[None]] = []

            async def throw() -> None:
                if fault == "delay":
                    proxy.delay_s = 0.1
                elif fault == "reset":
                    await proxy.reset()
                else:
                    proxy.truncate_next()  # the bridge's next event is cut in half

            def after_the_greeting(call: Call, batch: list[CallEvent]) -> None:
                if not thrown and any(e.kind == "transcript" for e in batch):
                    thrown.append(asyncio.create_task(throw()))

            r.bridge.services.observers.append(after_the_greeting)
            result = await simulate_call(
                r.bridge.base_url,
                audio,
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=3.0,
            )
            await asyncio.gather(*thrown)
            sessions = list(r.agent.sessions)
            metrics = r.bridge.services.metrics
        assert thrown, "the fault was thrown"
        assert result.closed_by == "caller"
        assert metrics.calls_failed == 0
        expected = 0 if fault == "delay" else 1
        assert metrics.model_reconnects == expected == len(sessions) - 1
        assert unexpected_errors(sessions) == []  # no truncate (or replay) errors
        if expected:
            assert sessions[-1].errors == []
        assert heard_after(audio[int(4.6 * RATE) : int(8.8 * RATE)], result, 9.0) > 0.9

    run_undisturbed(main())
