"""The ASGI wrapper a benchmarked server runs under: figures ``/metrics.json`` does not keep.

Wraps the bridge (or the relay) in the server process and owns only measurement:

* uplink lateness: per media socket, when each caller frame is *read* by the app, against
  the frame's due time. Frame ``k`` is due ``k`` frame periods after the call's best
  (smallest) offset seen so far, so the figure is the jitter the server added on top of
  the fastest frame of that call: it includes event-loop queueing that the in-app
  ``uplink`` histogram (read -> sent) cannot see. A frame read more than two frame
  periods (40 ms) late counts as late: one period is within the noise of a small VM,
  where an idle event loop already wakes up to ~25 ms late now and then.
* event-loop lag: a task that asks to wake every 10 ms and records how late it woke.
* garbage-collector pauses (``gc.callbacks``).
* ``POST /bench/reset`` (new histograms, counters kept for deltas), ``GET /bench/stats``
  (the ``/metrics.json`` snapshot plus the above), ``POST /bench/profile/start`` and
  ``/bench/profile/stop`` (cProfile of CPU time in the server's own thread, summarised as
  JSON; the raw profile is also written to ``$BRIDGE_BENCH_PSTATS`` when that is set).

Under ``bridge bench --workers N`` each worker runs its own probe (``worker=True``): it
starts with the app's lifespan, and its stats carry its pid and raw histograms, so the
bench can merge the workers' answers (``bridge.bench.workers``).

It must not change what the app does: it only looks at messages passing through.
"""

from __future__ import annotations

import asyncio
import cProfile
import dataclasses
import gc
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bridge.bench.profiling import summarise
from bridge.metrics import Histogram, Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FRAME_S = 0.02
LAG_TICK_S = 0.01
LATE_MS = 40.0  # two frames behind: past the noise of an idle loop on a small VM
MEDIA_PREFIX = '{"event":"media"'  # how the benchmark's callers (and Twilio) start a media frame


class Probe:
    def __init__(self, app: ASGIApp, metrics: Metrics, *, worker: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.worker = worker
        self.pstats_path = os.environ.get("BRIDGE_BENCH_PSTATS")
        self.profiler: cProfile.Profile | None = None
        self._gc_started = 0.0
        self._monitor: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.uplink_jitter = Histogram()  # ms a caller frame was read after its due time
        self.uplink_late = 0
        self.loop_lag = Histogram()
        self.gc_pause = Histogram()
        self.gc_collections = [0, 0, 0]
        self.media_sockets = 0

    # ------------------------------------------------------------------ monitors

    def start(self) -> None:
        """Start the loop-lag task and the GC hook (call from the server's event loop)."""
        if self._monitor is not None:
            return
        self._monitor = asyncio.get_running_loop().create_task(self._watch_loop())
        gc.callbacks.append(self._on_gc)

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self.loop_lag.add(max(0.0, loop.time() - due) * 1000)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pause.add((time.perf_counter() - self._gc_started) * 1000)
            self.gc_collections[info["generation"]] += 1

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.worker:
            self.start()  # a worker's loop: no one else can start the probe there
        if scope["type"] == "http" and scope["path"].startswith("/bench/"):
            await self._control(scope, send)
            return
        if scope["type"] == "websocket" and scope["path"] == "/twilio/media":
            self.media_sockets += 1
            receive = self._timed(receive)
        await self.app(scope, receive, send)

    def _timed(self, receive: Receive) -> Receive:
        frames = 0
        best = math.inf

        async def timed_receive() -> Message:
            nonlocal frames, best
            message = await receive()
            text = message.get("text")
            if text is not None and text.startswith(MEDIA_PREFIX):
                frames += 1
                offset = time.monotonic() - frames * FRAME_S
                if offset < best:
                    best = offset
                late_ms = (offset - best) * 1000
                self.uplink_jitter.add(late_ms)
                if late_ms > LATE_MS:
                    self.uplink_late += 1
            return message

        return timed_receive

    async def _control(self, scope: Scope, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        body: dict[str, Any]
        if path == "/bench/stats" and method == "GET":
            body = self.stats()
        elif path == "/bench/reset" and method == "POST":
            self.metrics.uplink = Histogram()
            self.metrics.downlink = Histogram()
            self.metrics.clear = Histogram()
            self._reset()
            body = self.stats()
        elif path == "/bench/profile/start" and method == "POST":
            if self.profiler is None:  # asked again (a worker): the first one goes on
                # CPU time, not wall time: time blocked in epoll is not work.
                self.profiler = cProfile.Profile(time.process_time)
                self.profiler.enable()
            body = {"profiling": True, "pid": os.getpid()}
        elif path == "/bench/profile/stop" and method == "POST" and self.profiler:
            self.profiler.disable()
            if self.pstats_path:  # the raw profile, for pstats / snakeviz
                self.profiler.dump_stats(self.pstats_path)
            body = {**summarise(self.profiler), "pid": os.getpid()}
            self.profiler = None
        elif path == "/bench/profile/stop" and method == "POST" and self.worker:
            body = {"profiling": False, "pid": os.getpid()}  # stopped already
        else:
            await _respond(send, 404, {"error": f"no {method} {path}"})
            return
        await _respond(send, 200, body)

    def stats(self) -> dict[str, Any]:
        body = {
            "metrics": self.metrics.snapshot(),
            "uplink_jitter": self.uplink_jitter.summary(),
            "uplink_late": self.uplink_late,
            "loop_lag": self.loop_lag.summary(),
            "gc_pause": self.gc_pause.summary(),
            "gc_collections": list(self.gc_collections),
            "media_sockets": self.media_sockets,
            "monotonic": time.monotonic(),
            "pid": os.getpid(),
        }
        if self.worker:  # what the bench needs to merge workers' histograms
            m = self.metrics
            hists = {"uplink_jitter": self.uplink_jitter, "loop_lag": self.loop_lag}
            hists |= {"gc_pause": self.gc_pause, "uplink": m.uplink, "downlink": m.downlink}
            hists |= {"clear": m.clear, "response": m.response}
            body["raw"] = {name: dataclasses.asdict(h) for name, h in hists.items()}
        return body


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, allow_nan=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
