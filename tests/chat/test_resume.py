"""Reconnection grace: a dropped connection comes back to the same call and model session.

``/chat/v1`` with python-socketio's own automatic reconnection (it resends the ``auth`` it
connected with, resume id included); ``/softphone`` with a page that connects again with
the id. Past ``SOCKETIO_RESUME_GRACE_S`` the call ends.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import numpy as np

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.chat.helpers import PATIENCE_S, ChatClient, no_calls
from tests.softphone.helpers import FakeBrowser, caller_speech


async def drop_transport(sio: object) -> None:
    """Cut the client's WebSocket as a network blip would: no Socket.IO goodbye."""
    ws = sio.eio.ws  # type: ignore[attr-defined]
    await ws.close()


def test_chat_client_resumes_within_the_grace_period() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                resume = secrets.token_urlsafe(16)
                client = ChatClient(16000, reconnection=True)
                await client.connect(bridge.base_url, auth={"resume": resume})
                await client.wait_for(lambda: client.audio, "the welcome message")
                (runner,) = bridge.services.calls
                assert client.of("status")[0]["resume"] == resume
                greetings = len(client.item_ids())

                await drop_transport(client.sio)
                await client.wait_for(
                    lambda: any(s.get("resumed") for s in client.of("status")), "the resume"
                )
                assert bridge.services.calls == {runner}
                assert len(agent.sessions) == 1 and runner.call.sessions == 1

                # The same conversation goes on: the caller is heard and echoed.
                await client.send_audio(caller_speech(16000))
                await client.send_audio(np.zeros(16000, np.int16))
                await client.wait_for(lambda: len(client.item_ids()) > greetings, "the echo")
                # One model session throughout, and after the resume only the echo: no
                # second greeting.
                assert len(agent.sessions) == 1 and runner.call.sessions == 1
                assert len(client.item_ids()) == greetings + 1
                await client.close()
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())


def test_past_the_grace_period_the_call_ends() -> None:
    async def main() -> None:
        async with running_bridge(Settings(socketio_resume_grace_s=0.5)) as bridge:
            client = ChatClient(16000)
            await client.connect(bridge.base_url, auth={"resume": secrets.token_urlsafe(16)})
            await client.wait_for(lambda: client.audio, "the welcome message")
            (runner,) = bridge.services.calls
            await drop_transport(client.sio)
            started = time.monotonic()
            await no_calls(bridge)
            assert time.monotonic() - started >= 0.5
            assert bridge.app.softphone.chat is not None
            assert len(bridge.app.softphone.chat.live) == 0
            assert runner.call.closed is not None and "not back within" in runner.call.closed
            await client.close()

    asyncio.run(main())


def test_softphone_page_resumes_with_its_id() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                resume = secrets.token_urlsafe(16)
                first = FakeBrowser(24000)
                await first.connect(bridge.base_url, auth={"resume": resume})
                await first.wait_for(lambda: first.audio, "the greeting")
                (runner,) = bridge.services.calls
                assert first.of("status")[0]["resume"] == resume
                await drop_transport(first.sio)
                await asyncio.wait_for(first.disconnected.wait(), PATIENCE_S)

                again = FakeBrowser(24000)
                await again.connect(bridge.base_url, auth={"resume": resume})
                await again.wait_for(lambda: "agent-ready" in again.status(), "agent-ready")
                assert again.of("status")[0]["resumed"] is True
                assert bridge.services.calls == {runner} and len(agent.sessions) == 1
                # The greeting was cut when the connection dropped; it is not said again.
                assert runner.call.barge_ins and runner.call.barge_ins[0].trigger == "client"
                assert again.audio == {}
                assert await again.call("hangup") == {"ok": True}
                await first.close()
                await again.close()
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())
