"""A raw Realtime proxy client over python-socketio, as a Socket.IO Realtime page is.

``RealtimeClient`` connects to the default namespace, sends ``realtime-message`` /
``realtime-audio`` and keeps every ``realtime-response`` (JSON events, or binary audio)
and ``realtime-error`` with its arrival time, so tests judge what arrived, not when.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import socketio

PATIENCE_S = 30.0
RATE = 24000
FRAME_MS = 20


class RealtimeClient:
    def __init__(self, *, reconnection: bool = False) -> None:
        self.http = aiohttp.ClientSession()
        self.sio = socketio.AsyncClient(
            reconnection=reconnection, reconnection_delay=0.1, http_session=self.http
        )
        self.t0 = time.monotonic()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[dict[str, Any]] = []
        self.binary = bytearray()
        self.audio: dict[str, bytearray] = defaultdict(bytearray)  # item id → PCM16
        self.first_audio: dict[str, float] = {}
        self.sio.on("realtime-response", self._on_response)
        self.sio.on("realtime-error", self._on_error)
        self.refusal: Any = None  # the bridge's refusal ``{message, data: {code}}``
        self.sio.on("connect_error", self._on_refused)

    async def connect(
        self,
        url: str,
        *,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
    ) -> None:
        await self.sio.connect(
            url,
            auth=auth or {},
            headers=headers or {},
            transports=transports or ["websocket"],
            wait_timeout=PATIENCE_S,
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
        await self.sio.shutdown()
        await self.http.close()

    async def send(self, event: dict[str, Any]) -> None:
        await self.sio.emit("realtime-message", event)

    async def send_audio(
        self, pcm: np.ndarray, *, stop: Callable[[], bool] = lambda: False
    ) -> None:
        """Stream ``pcm`` (int16, 24 kHz) as binary ``realtime-audio``, paced like a mic."""
        step = RATE * FRAME_MS // 1000
        start = time.monotonic()
        for k, i in enumerate(range(0, pcm.size, step)):
            if stop():
                return
            await self.sio.emit("realtime-audio", pcm[i : i + step].astype("<i2").tobytes())
            delay = start + (k + 1) * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def types(self) -> list[str]:
        return [e.get("type", "") for _, e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e.get("type") == kind]

    async def wait_for(self, predicate: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + PATIENCE_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; got {self.types()[-20:]}, errors {self.errors}"
                )
            await asyncio.sleep(0.02)

    def _on_response(self, data: Any) -> None:
        now = time.monotonic() - self.t0
        if isinstance(data, bytes):
            self.binary += data
            return
        self.events.append((now, data))
        if data.get("type") in ("response.audio.delta", "response.output_audio.delta"):
            item = data["item_id"]
            self.first_audio.setdefault(item, now)
            self.audio[item] += base64.b64decode(data["delta"])

    def _on_refused(self, data: Any) -> None:
        self.refusal = data

    def _on_error(self, data: Any) -> None:
        self.errors.append(data)
