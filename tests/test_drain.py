"""A deploy does not cut calls off: on SIGTERM new calls are refused, live ones finish."""

from __future__ import annotations

import asyncio
import signal

import httpx

from bridge.sim.caller import simulate_call
from tests.e2e import best_correlation, fixture, rig


def test_sigterm_drains_live_calls_then_exits():
    async def main() -> None:
        async with rig() as r:
            b = r.bridge
            caller = fixture("caller-hello.wav")
            call = asyncio.create_task(
                simulate_call(
                    b.base_url, caller, public_url=b.public_url, auth_token=b.auth_token, tail_s=0.5
                )
            )
            while not b.services.calls:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)

            b.server.handle_exit(signal.SIGTERM, None)  # what uvicorn's handler calls
            async with httpx.AsyncClient() as client:
                webhook = await client.post(
                    b.base_url + "/twilio/voice", data={"CallSid": "CA" + "2" * 32}
                )
                health = await client.get(b.base_url + "/healthz")
            # Refused before any TwiML, so Twilio's fallback URL (another instance) answers.
            assert webhook.status_code == 503
            assert health.status_code == 503 and health.json()["status"] == "draining"
            await asyncio.sleep(0.5)
            assert not b.task.done(), "the server must wait for the live call"

            result = await call  # the live call carries on to its natural end
            assert result.closed_by == "caller" and result.violations == []
            score, _ = best_correlation(caller[int(4.6 * 8000) : int(8.8 * 8000)], result.heard)
            assert score > 0.9
            async with asyncio.timeout(2.0):
                await asyncio.shield(b.task)  # and then the server exits by itself
            assert b.services.metrics.calls_failed == 0

    asyncio.run(main())


def test_a_second_signal_stops_at_once():
    async def main() -> None:
        async with rig() as r:
            b = r.bridge
            caller = fixture("caller-hello.wav")
            call = asyncio.create_task(
                simulate_call(b.base_url, caller, public_url=b.public_url, auth_token=b.auth_token)
            )
            while not b.services.calls:
                await asyncio.sleep(0.05)
            b.server.handle_exit(signal.SIGTERM, None)
            b.server.handle_exit(signal.SIGTERM, None)
            # uvicorn re-raises a captured signal once it has shut down, so that a real
            # process exits by it; here it would end the test run.
            b.server._captured_signals.clear()
            async with asyncio.timeout(3.0):
                await asyncio.shield(b.task)
            result = await call
            assert result.closed_by == "bridge"

    asyncio.run(main())
