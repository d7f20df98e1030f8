"""The softphone's connect token as an ``Authorization: Bearer`` header, from a plain
python-socketio ``AsyncClient`` against a real bridge on loopback: the right token
connects (websocket and long-polling) and starts a call; a wrong one, or the token under
another scheme, is refused with its reason and starts nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge
from tests.softphone.helpers import NS, PATIENCE_S

TOKEN = "s3cret-bearer"


async def attempt(
    bridge: RunningBridge, authorization: str, transports: list[str]
) -> dict[str, Any] | None:
    """Connect with ``Authorization: <authorization>``; None if it connected (and a call
    started for it), else the refusal ``{message, data}``."""
    client = socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []
    started = asyncio.Event()

    async def on_status(data: Any) -> None:
        if isinstance(data, dict) and data.get("state") == "connected":
            started.set()

    client.on("connect_error", lambda data: refused.append(data), namespace=NS)
    client.on("status", on_status, namespace=NS)
    try:
        try:
            await client.connect(
                bridge.base_url,
                namespaces=[NS],
                headers={"Authorization": authorization},
                transports=transports,
                wait_timeout=PATIENCE_S,
            )
        except socketio.exceptions.ConnectionError:
            assert refused, "refused without a connect_error"
            assert not bridge.services.calls
            data = refused[-1]
            return data if isinstance(data, dict) else {"message": str(data)}
        await asyncio.wait_for(started.wait(), PATIENCE_S)
        assert len(bridge.services.calls) == 1
        return None
    finally:
        await client.disconnect()
        await client.shutdown()


def test_a_bearer_token_connects_and_a_wrong_one_is_refused_with_the_reason() -> None:
    async def main() -> None:
        async with running_bridge(Settings(softphone_token=TOKEN)) as bridge:
            for transports in (["websocket"], ["polling"]):
                assert await attempt(bridge, f"Bearer {TOKEN}", transports) is None
                await until_no_calls(bridge)

            wrong = await attempt(bridge, "Bearer not-the-token", ["websocket"])
            assert wrong == {
                "message": "the access token is not valid",
                "data": {"code": "unauthorized"},
            }
            # The token under another scheme is no bearer: as if none was given.
            other = await attempt(bridge, f"Basic {TOKEN}", ["websocket"])
            assert other == {
                "message": "this softphone needs an access token",
                "data": {"code": "unauthorized"},
            }
            assert not bridge.services.calls

    asyncio.run(main())


async def until_no_calls(bridge: RunningBridge) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while bridge.services.calls:
        assert loop.time() < deadline, "the call did not end"
        await asyncio.sleep(0.02)
