"""A model that sends odd shapes to the raw Realtime proxy, over real loopback sockets.

The bridge's Socket.IO proxy is connected to a stand-in model (a ``websockets`` server)
that answers the session's first event with events of shapes no GA model should send
(each of which once ended the session: ``audio.input`` not an object, a ``type`` that is a
list, an audio delta that is missing or not base64 for a binary-audio client, JSON nested
past the decoder), then a valid ``response.done`` as a marker. The proxy delivers what it
can translate, skips the rest with a warning, and the session goes on: the marker
arrives, no ``realtime-error``, no ERROR in the log, and the client can still talk.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from bridge.config import Settings
from bridge.harness import running_bridge
from tests.proxy.helpers import PATIENCE_S, RealtimeClient

# Decodes (json.loads takes up to ~990 levels) and goes on; python-socketio's client
# decoder, a few levels deeper, drops it silently: not asserted on.
DEPTH = 985
ODD: list[str] = [
    json.dumps({"type": "session.created", "session": {"audio": {"input": [1], "output": "x"}}}),
    json.dumps({"type": ["response.done"]}),
    json.dumps({"type": "response.done", "response": {"audio": "x", "output_modalities": 5}}),
    json.dumps({"type": "response.output_audio.delta", "item_id": "i"}),
    json.dumps({"type": "response.output_audio.delta", "item_id": "i", "delta": "é"}),
    '{"type": "x", "deep": ' + "[" * DEPTH + "]" * DEPTH + "}",
    "[" * 100_000 + "]" * 100_000,
    "not JSON",
]
MARKER = {"type": "response.done", "response": {"id": "resp_marker", "status": "completed"}}


async def odd_model(ws: ServerConnection) -> None:
    """Send the odd events, then the marker, after the session's first event; then echo
    ``response.create`` as a ``response.done`` (the client can still talk)."""
    await ws.recv()  # the proxy's own session.update
    for text in ODD:
        await ws.send(text)
    await ws.send(json.dumps(MARKER))
    async for message in ws:
        if json.loads(message).get("type") == "response.create":
            done = {"type": "response.done", "response": {"id": "resp_2", "status": "completed"}}
            await ws.send(json.dumps(done))


def test_odd_model_events_are_skipped_or_passed_and_the_session_goes_on(caplog):
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with serve(odd_model, "127.0.0.1", 0) as model:
            port = model.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/v1/realtime"
            async with running_bridge(Settings(), model_url=url) as bridge:
                client = RealtimeClient()
                got: list[Any] = []
                client.sio.on("realtime-response", got.append)
                try:
                    await client.connect(bridge.base_url, auth={"audio": "binary"})
                    await client.send({"type": "input_audio_buffer.clear"})  # opens the model

                    def done(rid: str) -> bool:
                        return any(
                            isinstance(e, dict) and (e.get("response") or {}).get("id") == rid
                            for e in got
                        )

                    marker = "the marker (or an error)"
                    await client.wait_for(lambda: done("resp_marker") or client.errors, marker)
                    assert not client.errors, client.errors  # e.g. model_closed
                    await client.send({"type": "response.create"})
                    await client.wait_for(lambda: done("resp_2"), "a reply after the odd events")
                    assert client.sio.connected and not client.errors, client.errors
                    kinds = [e.get("type") if isinstance(e, dict) else "binary" for e in got]
                    assert kinds[:5] == [
                        "session.created",
                        ["response.done"],
                        "response.done",
                        "response.audio.delta",  # not base64: passed as JSON
                        "response.audio.delta",
                    ], kinds
                    assert got[0]["session"] == {}  # nothing in it a beta client could read
                finally:
                    await client.close()

    asyncio.run(asyncio.wait_for(main(), 3 * PATIENCE_S))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
