import asyncio
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bridge.ai.client import MAX_MESSAGE_BYTES, connect_realtime, fits, realtime_uri


def test_uri_carries_the_model() -> None:
    assert (
        realtime_uri("wss://api.openai.com/v1/realtime", "gpt-realtime")
        == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    assert (
        realtime_uri("wss://proxy.example/v1/realtime?region=eu", "a b/c")
        == "wss://proxy.example/v1/realtime?region=eu&model=a%20b%2Fc"
    )


@pytest.mark.parametrize(
    ("api_key", "bearer"), [(None, "Bearer local"), ("sk-test", "Bearer sk-test")]
)
def test_connects_with_the_bearer_header_only(api_key: str | None, bearer: str) -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["path"] = ws.request.path
        seen["headers"] = ws.request.headers
        await ws.send("hello")
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_realtime(
                f"ws://127.0.0.1:{port}/v1/realtime", "gpt-realtime", api_key
            )
            assert await ws.recv() == "hello"
            assert ws.protocol.max_message_size == MAX_MESSAGE_BYTES == 16 * 1024 * 1024
            await ws.close()

    asyncio.run(main())
    assert seen["path"] == "/v1/realtime?model=gpt-realtime"
    headers = seen["headers"]
    assert headers.get_all("Authorization") == [bearer]
    assert "OpenAI-Beta" not in headers
    assert "Sec-WebSocket-Extensions" not in headers  # no per-frame deflate cost


def test_fits_says_whether_a_send_could_wait_for_the_peer() -> None:
    """The runner arms no send timer for sends that fit: they must never wait."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_realtime(f"ws://127.0.0.1:{port}/v1/realtime", "m", None)
            high = ws.transport.get_write_buffer_limits()[1]
            assert fits(ws, [b"x" * 4000] * 3)
            assert not fits(ws, [b"x" * high])  # past the limit a send waits for the peer
            assert not fits(ws, [b"x" * (high // 2)] * 2)
            ws.pause_writing()  # what the transport calls when its buffer is over the limit
            assert not fits(ws, [b"x"])  # paused until below the low mark: sends wait
            ws.resume_writing()
            assert fits(ws, [b"x"])
            await ws.close()

    asyncio.run(main())
