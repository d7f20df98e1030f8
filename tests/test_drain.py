"""A deploy does not cut calls off: on SIGTERM new calls are refused, live ones finish."""

from __future__ import annotations

import asyncio
import signal

import httpx

from bridge.sim.caller import simulate_call
from tests.e2e import PATIENCE_S, bridge_serve, fixture, match_through_gaps, rig, until


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
            # A second of the call under way: the caller's frames, however slow the host.
            await until(lambda: b.services.metrics.frames_in >= 50, "a second of the call")

            b.server.handle_exit(signal.SIGTERM, None)  # what uvicorn's handler calls
            async with httpx.AsyncClient(timeout=PATIENCE_S) as client:
                webhook = await client.post(
                    b.base_url + "/twilio/voice", data={"CallSid": "CA" + "2" * 32}
                )
                health = await client.get(b.base_url + "/healthz")
            # Refused before any TwiML, so Twilio's fallback URL (another instance) answers.
            assert webhook.status_code == 503
            assert health.status_code == 503 and health.json()["status"] == "draining"
            # Another half second of the call later, the server is still there for it.
            frames = b.services.metrics.frames_in
            await until(lambda: b.services.metrics.frames_in >= frames + 25, "more of the call")
            assert not b.task.done(), "the server must wait for the live call"

            result = await call  # the live call carries on to its natural end
            assert result.closed_by == "caller" and result.violations == []
            score, _ = match_through_gaps(caller[int(4.6 * 8000) : int(8.8 * 8000)], result.heard)
            assert score > 0.9
            async with asyncio.timeout(PATIENCE_S):
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
            await until(lambda: b.services.calls, "the call to start")
            b.server.handle_exit(signal.SIGTERM, None)
            b.server.handle_exit(signal.SIGTERM, None)
            # uvicorn re-raises a captured signal once it has shut down, so that a real
            # process exits by it; here it would end the test run.
            b.server._captured_signals.clear()
            async with asyncio.timeout(PATIENCE_S):
                await asyncio.shield(b.task)
            result = await call
            # At once: the bridge hung up on the caller, well before their audio ran out.
            assert result.closed_by == "bridge"
            assert len(result.sent) < len(caller) / 2

    asyncio.run(main())


def test_bridge_serve_exits_0_on_sigterm(tmp_path):
    """A real ``bridge serve`` process stops on SIGTERM with exit code 0, as a deploy expects
    (uvicorn alone would raise the signal again after stopping: exit 143)."""
    with bridge_serve(tmp_path) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(PATIENCE_S) == 0
