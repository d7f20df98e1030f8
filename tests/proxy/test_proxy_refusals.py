"""The proxy is locked down: refused clients and refused events open no model session."""

import asyncio
from typing import Any

import socketio

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.proxy.helpers import RealtimeClient

UPDATE = {"type": "session.update", "session": {"voice": "ash"}}


async def refused(url: str, **kwargs: Any) -> str | None:
    """The refusal code of a connection attempt, or None if it connected."""
    client = RealtimeClient()
    try:
        await client.connect(url, **kwargs)
    except socketio.exceptions.ConnectionError:
        refusal = client.refusal
        if isinstance(refusal, dict) and isinstance(refusal.get("data"), dict):
            return str(refusal["data"].get("code"))
        return "transport"
    finally:
        await client.close()
    return None


def test_token_and_origin_are_required_before_any_model_session():
    async def main() -> None:
        agent = await serve_local_agent(seed=3)
        keyed = Settings(openai_api_key="sk-test-not-real", softphone_token="s3cret-token")
        try:
            async with running_bridge(keyed, model_url=agent.url) as bridge:
                url = bridge.base_url
                assert await refused(url) == "unauthorized"
                assert await refused(url, auth={"token": "wrong"}) == "unauthorized"
                evil = {"Origin": "https://evil.example"}
                assert await refused(url, auth={"token": "s3cret-token"}, headers=evil) == (
                    "origin_not_allowed"
                )
                assert not agent.sessions
                # The right token (as a bearer header here) is let in and gets a session.
                client = RealtimeClient()
                await client.connect(url, headers={"Authorization": "Bearer s3cret-token"})
                await client.send(UPDATE)
                await client.wait_for(lambda: client.of("session.updated"), "session.updated")
                assert len(agent.sessions) == 1
                await client.close()
            no_token = Settings(openai_api_key="sk-test-not-real")
            async with running_bridge(no_token, model_url=agent.url) as bridge:
                assert await refused(bridge.base_url) == "disabled"
            assert len(agent.sessions) == 1
        finally:
            await agent.close()

    asyncio.run(main())


def test_disallowed_events_are_refused_with_a_reason_and_open_nothing():
    async def main() -> None:
        agent = await serve_local_agent(seed=4)
        settings = Settings(realtime_proxy_max_sessions=1, realtime_proxy_messages_per_s=1)
        try:
            async with running_bridge(settings, model_url=agent.url) as bridge:
                client = RealtimeClient()
                await client.connect(bridge.base_url)
                assert await refused(bridge.base_url) == "busy"  # the session cap
                await client.send({"type": "transcription_session.update", "session": {}})
                await client.sio.emit("realtime-audio", "not binary")
                await client.sio.emit("realtime-audio", b"\x00\x01\x02")  # odd length
                await client.sio.emit("hello", {})
                await client.sio.emit("realtime-message", "{not json")
                await client.wait_for(lambda: len(client.errors) >= 2, "refusals")
                # One message a second with a burst of two: the rest are refused too.
                await client.wait_for(lambda: len(client.errors) == 5, "five refusals")
                codes = [e["code"] for e in client.errors]
                assert codes[0] == "event_not_allowed"
                assert "transcription_session.update" in client.errors[0]["message"]
                assert codes[1] == "invalid_audio"
                assert "rate_limited" in codes[2:]
                assert not agent.sessions
                assert bridge.services.metrics.active_by_leg.get("realtime_proxy", 0) == 0
                await client.close()
        finally:
            await agent.close()

    asyncio.run(main())
