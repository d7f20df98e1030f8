"""A companion-protocol client written from the protocol's description, over ``websockets``.

``CompanionClient`` keeps every message it gets (with its arrival time), the agent's audio
by item, and what it would have played: on ``speech_started`` it stops playback, as such
clients do (the bridge paces audio at real time, so what arrived is what was played).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RATE = 24000
FRAME_MS = 20
PATIENCE_S = 30.0
TRAITS = {"playfulness": 50, "empathy": 80, "humor": 10, "intelligence": 50, "supportiveness": 50}


def ws_url(base_url: str, path: str = "/ws/companion") -> str:
    return base_url.replace("http://", "ws://") + path


class CompanionClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.t0 = time.monotonic()
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.audio: dict[str | None, bytearray] = defaultdict(bytearray)
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, **options: Any) -> CompanionClient:
        ws = await connect(ws_url(base_url, options.pop("path", "/ws/companion")), **options)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                self.messages.append((time.monotonic(), message))
                if message["type"] == "audio_delta":
                    data = message["data"]
                    self.audio[data["itemId"]] += base64.b64decode(data["audioData"])
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, kind: str, data: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, "data": data}))

    async def start(
        self,
        user: str = "u1",
        conversation: str = "c1",
        *,
        traits: dict[str, Any] | None = None,
        voice: dict[str, Any] | None = None,
        ready: bool = True,
    ) -> None:
        await self.send("auth", {"userId": user, "conversationId": conversation})
        await self.send(
            "start_realtime",
            {
                "personalityTraits": traits or TRAITS,
                "voiceSettings": voice or {"voice": "alloy", "speed": 1.0, "volume": 1.0},
            },
        )
        if ready:
            await self.wait_for(lambda: self.of("session_ready"), "session_ready")

    async def send_audio(self, pcm: np.ndarray, *, realtime: bool = True) -> None:
        """Stream ``pcm`` (int16, 24 kHz) in 20 ms frames, paced like a microphone."""
        step = RATE * FRAME_MS // 1000
        start = time.monotonic()
        for k, i in enumerate(range(0, pcm.size, step)):
            frame = pcm[i : i + step].astype("<i2").tobytes()
            if self.closed.is_set():
                return
            await self.send("audio", {"audio": base64.b64encode(frame).decode()})
            if realtime:
                delay = start + (k + 1) * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m["data"] for _, m in self.messages if m["type"] == kind]

    def errors(self) -> list[str]:
        return [d["error"] for d in self.of("error")]

    def kinds(self) -> list[str]:
        return [m["type"] for _, m in self.messages]

    async def wait_for(
        self, predicate: Callable[[], object], what: str, timeout: float = PATIENCE_S
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.kinds()[-20:]}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self._reader
