"""The minimal relay: the cost baseline the bridge's figures are divided by.

The same stack as the bridge (Starlette on uvicorn with the same settings, a websockets
client to the model, one JSON parse per message each way) and nothing else: caller
``media`` payloads are passed through, base64 untouched, as ``input_audio_buffer.append``;
every ``response.output_audio.delta`` goes back at once as one ``media`` message. No
transcoding, no pacing, no marks, no barge-in, no signature checks, no call logic.

So its "audio" is μ-law bytes labelled PCM16 24 kHz on the way up and PCM16 bytes played
as μ-law on the way down: noise to a listener, fine for a cost baseline (the local agent
accepts any even-length base64). It sends the same ``session.update`` as the bridge so the
agent's work per call is alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.ai.client import connect_realtime
from bridge.config import Settings
from bridge.errors import BridgeError
from bridge.metrics import Metrics

logger = logging.getLogger(__name__)

TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
    '<Stream url="ws://{host}/twilio/media"/></Connect></Response>'
)


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class Relay:
    """A pass-through Twilio <-> Realtime forwarder. ``calls``/``draining`` as ``Services``."""

    def __init__(self, settings: Settings, model_url: str) -> None:
        self.settings = settings
        self.model_url = model_url
        self.metrics = Metrics()
        self.calls: set[asyncio.Task[Any]] = set()
        self.proxied: set[object] = set()  # what the draining server reads of ``Services``
        self.draining = False
        self.app = Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                WebSocketRoute("/twilio/media", self.media),
                Route("/metrics.json", self.metrics_json),
            ]
        )

    async def voice(self, request: Request) -> Response:
        host = request.headers.get("host", "127.0.0.1")
        return Response(TWIML.format(host=host), media_type="text/xml")

    async def metrics_json(self, request: Request) -> Response:
        return JSONResponse(self.metrics.snapshot())

    async def media(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            stream_sid = await _wait_for_start(ws)
        except (WebSocketDisconnect, RuntimeError, ValueError, KeyError):
            return
        if stream_sid is None:
            return
        s = self.settings
        try:
            model = await connect_realtime(
                self.model_url, s.openai_realtime_model, s.openai_api_key
            )
        except BridgeError as exc:
            logger.warning("relay: %s", exc)
            await ws.close(1011)
            return
        metrics = self.metrics
        metrics.calls_started += 1
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        metrics.calls_active = len(self.calls)
        await model.send(_dumps(rt.session_update(Agent())))
        tasks = [
            asyncio.create_task(self._uplink(ws, model)),
            asyncio.create_task(self._downlink(ws, model, stream_sid)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failures = [t.exception() for t in done if t.exception() is not None]
            if failures:
                metrics.calls_failed += 1
                logger.warning("relay: call failed: %r", failures[0])
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await model.close()
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await ws.close()
            self.calls.discard(task)
            metrics.calls_active = len(self.calls)

    async def _uplink(self, ws: WebSocket, model: ClientConnection) -> None:
        metrics = self.metrics
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            now = time.monotonic()
            data = json.loads(message.get("text") or "{}")
            event = data.get("event")
            if event == "media":
                metrics.frames_in += 1
                await model.send(
                    _dumps({"type": "input_audio_buffer.append", "audio": data["media"]["payload"]})
                )
                metrics.uplink.add((time.monotonic() - now) * 1000)
            elif event == "stop":
                return

    async def _downlink(self, ws: WebSocket, model: ClientConnection, stream_sid: str) -> None:
        metrics = self.metrics
        # The model went away, or the caller hung up while a media message was on its way
        # (its stop may still be queued for the uplink): the call is over, not failed.
        with contextlib.suppress(ConnectionClosed, WebSocketDisconnect):
            async for message in model:
                now = time.monotonic()
                event = json.loads(message)
                kind = event.get("type")
                if kind == "response.output_audio.delta":
                    await ws.send_text(
                        _dumps(
                            {
                                "event": "media",
                                "streamSid": stream_sid,
                                "media": {"payload": event["delta"]},
                            }
                        )
                    )
                    metrics.downlink.add((time.monotonic() - now) * 1000)
                elif kind == "error":
                    metrics.model_errors += 1


async def _wait_for_start(ws: WebSocket) -> str | None:
    while True:
        data = json.loads(await ws.receive_text())
        if data.get("event") == "start":
            sid: str = data["streamSid"]
            return sid
        if data.get("event") == "stop":
            return None
