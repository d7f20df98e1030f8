"""A raw PCM voice client over ``websockets``, written from the protocol description.

``VoiceClient`` sends binary PCM16 frames paced like a microphone and keeps what comes
back: the agent's audio (bytes, with arrival times) and the JSON events, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME_MS = 20
PATIENCE_S = 30.0


class VoiceClient:
    def __init__(self, ws: ClientConnection, rate: int) -> None:
        self.ws = ws
        self.rate = rate
        self.t0 = time.monotonic()
        self.audio = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (monotonic, total bytes so far)
        self.events: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, *, rate: int = 16000, headers: dict[str, str] | None = None
    ) -> VoiceClient:
        ws = await connect(url, additional_headers=headers or {}, open_timeout=PATIENCE_S)
        return cls(ws, rate)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio += message
                    self.arrivals.append((time.monotonic(), len(self.audio)))
                else:
                    self.events.append(json.loads(message))
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "event" and e.get("name") == name]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    async def send_audio(self, pcm: np.ndarray) -> None:
        """Stream ``pcm`` (int16 at the session rate) in 20 ms frames, at real time."""
        step = self.rate * FRAME_MS // 1000
        start = time.monotonic()
        for k, i in enumerate(range(0, pcm.size, step)):
            if self.closed.is_set():
                return
            await self.ws.send(pcm[i : i + step].astype("<i2").tobytes())
            delay = start + (k + 1) * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def wait_for(
        self, predicate: Callable[[], object], what: str, timeout: float = PATIENCE_S
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.events[-10:]}")
            await asyncio.sleep(0.02)


def ws_url(base_url: str, path: str = "/ws/voice", **query: str | int) -> str:
    url = base_url.replace("http://", "ws://") + path
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url
