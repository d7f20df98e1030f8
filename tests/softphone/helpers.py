"""Shared helpers for the softphone tests: a scripted browser over python-socketio.

``FakeBrowser`` does what the page does: it plays the bridge's audio in real time
(``bridge.sim.far_end.FarEnd``, counting bytes as samples), echoes each mark when playback
reaches it, and on ``clear`` drops its queue and echoes every pending mark. It keeps what
it played and when, so tests can judge the bridge against what was really delivered
rather than expect a loaded host to keep pace with the wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import socketio

from bridge.audio.resample import resample_offline
from bridge.audio.wav import read_wav
from bridge.sim.far_end import FarEnd

ROOT = Path(__file__).resolve().parents[2]
NS = "/softphone"
FRAME_MS = 20
# Generous: a deadline only ever ends a test that is failing anyway.
PATIENCE_S = 30.0
SILENCE_BYTE = 0xFF  # what FarEnd plays while it has nothing queued


def caller_speech(rate: int, *, lead_s: float = 0.5, tail_s: float = 1.0) -> np.ndarray:
    """The utterance of fixtures/caller-hello.wav (4.5 to 9.0 s) at ``rate``, with margins."""
    pcm, src = read_wav(ROOT / "fixtures" / "caller-hello.wav")
    clip = pcm[int((4.5 - lead_s) * src) : int((9.0 + tail_s) * src)]
    return np.asarray(resample_offline(clip, src, rate), dtype=np.int16)


def utterance(rate: int) -> np.ndarray:
    """Only the spoken part (what an echo should reproduce)."""
    return caller_speech(rate, lead_s=0.0, tail_s=0.0)


def best_correlation(a: np.ndarray, b: np.ndarray, *, max_lag: int) -> float:
    """Highest normalised cross-correlation of ``a`` and ``b`` over lags ±``max_lag``."""
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 1):
        xs = x[max(lag, 0) :]
        ys = y[max(-lag, 0) :]
        n = min(xs.size, ys.size)
        if n < 1000:
            continue
        xs, ys = xs[:n], ys[:n]
        denom = np.sqrt(np.dot(xs, xs) * np.dot(ys, ys))
        if denom > 0:
            best = max(best, float(np.dot(xs, ys) / denom))
    return best


def coarse_lag(a: np.ndarray, b: np.ndarray) -> int:
    """The lag (samples, ``b`` later than ``a``) of the cross-correlation peak, via FFT."""
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    spec = np.fft.rfft(b.astype(np.float64), n) * np.conj(np.fft.rfft(a.astype(np.float64), n))
    corr = np.fft.irfft(spec, n)
    lag = int(np.argmax(corr))
    return lag if lag < n // 2 else lag - n


class FakeBrowser:
    """A softphone page without a browser: plays audio, echoes marks, logs everything."""

    def __init__(self, rate: int = 24000) -> None:
        self.rate = rate
        # Our own HTTP session, closed in ``close``: a long-poll still in flight when the
        # server ends the session would otherwise leave a connection open.
        self.http = aiohttp.ClientSession()
        self.sio = socketio.AsyncClient(reconnection=False, http_session=self.http)
        # Times are seconds since ``t0`` (``time.monotonic``, the bridge's clock too).
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str, Any]] = []
        self.audio: dict[str | None, bytearray] = defaultdict(bytearray)
        self.far = FarEnd(rate=rate * 2, start=self.t0)  # bytes of PCM16 counted as "samples"
        self.played = bytearray()  # what the far end played, byte by byte from t0
        self.clears: list[float] = []
        self.refusal: dict[str, Any] | None = None
        self.disconnected = asyncio.Event()
        self.ended = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self.sio.on("*", self._on_event, namespace=NS)
        self.sio.on("connect_error", self._on_refused, namespace=NS)
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)

    # -- connection ----------------------------------------------------------------

    async def connect(
        self,
        url: str,
        *,
        auth: dict[str, Any] | None = None,
        transports: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        await self.sio.connect(
            url,
            namespaces=[NS],
            auth={"sample_rate": self.rate, **(auth or {})},
            transports=transports or ["websocket"],
            headers=headers or {},
            wait_timeout=PATIENCE_S,
        )
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
        await self.sio.shutdown()
        await self.http.close()

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(
            event, data if data is not None else {}, namespace=NS, timeout=PATIENCE_S
        )

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data if data is not None else {}, namespace=NS)

    async def send_audio(
        self,
        pcm: np.ndarray,
        *,
        binary: bool = False,
        realtime: bool = True,
        sent: list[float] | None = None,
    ) -> None:
        """Stream ``pcm`` (int16 at the session rate) in 20 ms frames, paced like a mic.

        ``sent`` gets the time (``now()``) each frame went out.
        """
        step = self.rate * FRAME_MS // 1000
        start = time.monotonic()
        for k, i in enumerate(range(0, pcm.size, step)):
            frame = pcm[i : i + step].astype("<i2").tobytes()
            data: Any = frame if binary else base64.b64encode(frame).decode()
            if self.disconnected.is_set():
                return  # the bridge ended the session (like a page, stop the mic)
            if sent is not None:
                sent.append(self.now())
            await self.emit("audio", {"data": data, "meta_info": {"sample_rate": self.rate}})
            if realtime:
                delay = start + (k + 1) * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    # -- what arrived ----------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def of(self, kind: str) -> list[Any]:
        return [data for _, k, data in self.events if k == kind]

    def status(self) -> list[str]:
        return [d["state"] for d in self.of("status")]

    def item_ids(self) -> list[str | None]:
        return list(self.audio)

    async def wait_for(
        self, predicate: Callable[[], object], what: str, timeout: float = PATIENCE_S
    ) -> None:
        """Poll until ``predicate()`` holds; fail after ``timeout`` s (a generous default)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; "
                    f"got {[k for _, k, _ in self.events][-20:]}"
                )
            await asyncio.sleep(0.02)

    def played_when_cut(self, item_id: str, cut_at: float) -> tuple[float, float]:
        """What the page had played of ``item_id`` at ``cut_at`` (``time.monotonic``), in
        ms: the bounds ``(low, high)``.

        ``far.played_ms`` stops growing at the first ``clear``, which reaches the page a
        moment after the bridge cut (later still on a loaded host). Meanwhile the page
        played on: at real-time pace at most (``low``), and at least the audible bytes it
        put out (``high``; it plays silence bytes when it has nothing queued).
        """
        played, clear_at, cut = self.far.played_ms(item_id), self.clears[0], cut_at - self.t0
        in_flight_ms = max(0.0, clear_at - cut) * 1000.0
        per_s = self.rate * 2
        end = math.floor(clear_at * per_s)
        start = min(max(0, math.floor(cut * per_s)), end)
        window = np.frombuffer(bytes(self.played[start:end]), np.uint8)
        audible_ms = np.count_nonzero(window != SILENCE_BYTE) * 1000.0 / per_s
        return played - in_flight_ms, played - min(audible_ms, in_flight_ms)

    # -- handlers ------------------------------------------------------------------

    async def _on_event(self, event: str, data: Any = None) -> None:
        now = time.monotonic()
        self.events.append((self.now(), event, data))
        match event:
            case "audio":
                pcm = base64.b64decode(data["data"])
                self.audio[data["meta_info"]["item_id"]] += pcm
                self.far.media(pcm, now)
            case "mark":
                self.far.mark(data["name"], now)
            case "clear":
                self.clears.append(now - self.t0)
                for name in self.far.clear(now):
                    await self.emit("mark", {"name": name})
            case "status" if data.get("state") == "ended":
                self.ended.set()
            case _:
                pass

    async def _on_refused(self, data: Any = None) -> None:
        self.refusal = data if isinstance(data, dict) else {"message": str(data)}

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            audio, marks = self.far.advance(time.monotonic())
            self.played += audio
            for name in marks:
                if self.sio.connected:
                    await self.emit("mark", {"name": name})


async def refusal(
    url: str,
    *,
    rate: int = 24000,
    auth: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    transports: list[str] | None = None,
) -> dict[str, Any] | None:
    """Try to connect; the refusal ``{message, data: {code}}``, or None if it connected."""
    browser = FakeBrowser(rate)
    try:
        await browser.connect(url, auth=auth, headers=headers, transports=transports)
    except socketio.exceptions.ConnectionError as exc:
        if browser.refusal and "data" in browser.refusal:
            return browser.refusal  # refused by the bridge, with a reason
        return {"message": str(exc), "data": {"code": "transport"}}
    finally:
        await browser.close()
    return None
