"""A proxy client whose connection drops takes up the same model session (resume id)."""

import asyncio
import secrets

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.chat.test_resume import drop_transport
from tests.proxy.helpers import RealtimeClient

UPDATE = {"type": "session.update", "session": {"voice": "ash"}}


def test_resume_within_the_grace_period_keeps_the_model_session() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=6)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                client = RealtimeClient(reconnection=True)
                await client.connect(bridge.base_url, auth={"resume": secrets.token_urlsafe(16)})
                await client.send(UPDATE)
                await client.wait_for(lambda: len(client.of("session.updated")) == 2, "updated")
                (session,) = bridge.services.proxied
                first_sid = client.sio.get_sid()

                await drop_transport(client.sio)
                await client.wait_for(
                    lambda: client.sio.connected and client.sio.get_sid() != first_sid,
                    "the reconnection",
                )
                await client.send(UPDATE)
                await client.wait_for(lambda: len(client.of("session.updated")) == 3, "updated")
                assert bridge.services.proxied == {session}
                assert len(agent.sessions) == 1
                await client.close()
                await client.wait_for(lambda: not bridge.services.proxied, "the end")
        finally:
            await agent.close()

    asyncio.run(main())


def test_past_the_grace_period_the_model_session_ends() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=7)
        try:
            settings = Settings(socketio_resume_grace_s=0.5)
            async with running_bridge(settings, model_url=agent.url) as bridge:
                client = RealtimeClient()
                await client.connect(bridge.base_url, auth={"resume": secrets.token_urlsafe(16)})
                await client.send(UPDATE)
                await client.wait_for(lambda: client.of("session.updated"), "updated")
                await drop_transport(client.sio)
                await client.wait_for(lambda: not bridge.services.proxied, "the end")
                await client.wait_for(lambda: agent.closed_sessions, "the model session closed")
                await client.close()
        finally:
            await agent.close()

    asyncio.run(main())
