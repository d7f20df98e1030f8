"""A ``/chat/v1`` client over python-socketio, playing what it gets in real time.

``ChatClient`` is what a Bolna-style page does: it sends base64 PCM16 ``audio`` with
``meta_info``, ``text`` and ``clear``, and plays the agent's audio in arrival order at
real-time pace, dropping what is queued on ``clear``. It echoes no marks. It keeps what it
played and when, so tests judge the bridge on what was really delivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import socketio

NS = "/chat/v1"
FRAME_MS = 20
PATIENCE_S = 30.0


@dataclass
class Span:
    item_id: str | None
    start: float  # monotonic
    end: float


class ChatClient:
    def __init__(self, rate: int = 16000, *, reconnection: bool = False) -> None:
        self.rate = rate
        self.http = aiohttp.ClientSession()
        self.sio = socketio.AsyncClient(
            reconnection=reconnection,
            reconnection_delay=0.2,
            reconnection_delay_max=0.5,
            http_session=self.http,
        )
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str, Any]] = []
        self.audio: dict[str | None, bytearray] = defaultdict(bytearray)
        self.spans: list[Span] = []
        self.free_at = 0.0
        self.clears: list[float] = []  # monotonic
        self.refusal: dict[str, Any] | None = None
        self.disconnected = asyncio.Event()
        self.sio.on("*", self._on_event, namespace=NS)
        self.sio.on("connect_error", self._on_refused, namespace=NS)
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)
        self.sio.on("connect", self._on_connect, namespace=NS)

    async def connect(
        self,
        url: str,
        *,
        query: str = "",
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
    ) -> None:
        self.disconnected.clear()
        await self.sio.connect(
            url + (f"?{query}" if query else ""),
            namespaces=[NS],
            auth=auth,
            headers=headers or {},
            transports=transports or ["websocket"],
            wait_timeout=PATIENCE_S,
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
        await self.sio.shutdown()
        await self.http.close()

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data, namespace=NS)

    async def send_audio(
        self, pcm: np.ndarray, *, binary: bool = False, sent: list[float] | None = None
    ) -> None:
        """Stream ``pcm`` (int16 at ``rate``) in 20 ms frames, paced like a microphone."""
        step = self.rate * FRAME_MS // 1000
        start = time.monotonic()
        for k, i in enumerate(range(0, pcm.size, step)):
            frame = pcm[i : i + step].astype("<i2").tobytes()
            data: Any = frame if binary else base64.b64encode(frame).decode()
            if self.disconnected.is_set():
                return
            if sent is not None:
                sent.append(time.monotonic())
            meta = {"sample_rate": self.rate, "stream_sid": "stream-1"}
            await self.emit("audio", {"data": data, "meta_info": meta})
            delay = start + (k + 1) * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    # -- what arrived ------------------------------------------------------------------

    def of(self, kind: str) -> list[Any]:
        return [data for _, k, data in self.events if k == kind]

    def item_ids(self) -> list[str | None]:
        return list(self.audio)

    def played_ms(self, item_id: str | None, at: float | None = None) -> float:
        """What the player had played of ``item_id`` by ``at`` (monotonic; default now),
        up to the first ``clear`` after it started."""
        at = time.monotonic() if at is None else at
        total = 0.0
        for span in self.spans:
            if span.item_id == item_id and span.start < at:
                total += min(span.end, at) - span.start
        return total * 1000

    def gaps_ms(self, item_id: str | None, at: float) -> float:
        """How long the player ran dry in the middle of ``item_id`` before ``at`` (a loaded
        host delivering late): time the bridge's schedule, which never hears of it, counts
        as played."""
        spans = [span for span in self.spans if span.item_id == item_id and span.start < at]
        return 1000 * sum(b.start - a.end for a, b in itertools.pairwise(spans))

    async def wait_for(
        self, predicate: Callable[[], object], what: str, timeout: float = PATIENCE_S
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; "
                    f"got {[k for _, k, _ in self.events][-20:]}"
                )
            await asyncio.sleep(0.02)

    # -- handlers ----------------------------------------------------------------------

    async def _on_event(self, event: str, data: Any = None) -> None:
        now = time.monotonic()
        self.events.append((now - self.t0, event, data))
        match event:
            case "audio":
                pcm = base64.b64decode(data["data"])
                item_id = data["meta_info"]["item_id"]
                self.audio[item_id] += pcm
                start = max(self.free_at, now)
                self.free_at = start + len(pcm) / 2 / data["meta_info"]["sample_rate"]
                self.spans.append(Span(item_id, start, self.free_at))
            case "clear":
                self.clears.append(now)
                kept = []
                for span in self.spans:  # what had not played yet is dropped
                    if span.start < now:
                        kept.append(Span(span.item_id, span.start, min(span.end, now)))
                self.spans = kept
                self.free_at = now
            case _:
                pass

    async def _on_refused(self, data: Any = None) -> None:
        self.refusal = data if isinstance(data, dict) else {"message": str(data)}

    async def _on_connect(self) -> None:
        self.disconnected.clear()  # connected again (automatic reconnection)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()


async def refusal(url: str, **kw: Any) -> dict[str, Any] | None:
    """Try to connect; the refusal ``{message, data: {code}}``, or None if it connected."""
    client = ChatClient()
    try:
        await client.connect(url, **kw)
    except socketio.exceptions.ConnectionError as exc:
        if client.refusal and "data" in client.refusal:
            return client.refusal
        return {"message": str(exc), "data": {"code": "transport"}}
    finally:
        await client.close()
    return None


async def no_calls(bridge: Any, timeout: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout
    while bridge.services.calls:
        if time.monotonic() > deadline:
            raise AssertionError("calls still running")
        await asyncio.sleep(0.02)
