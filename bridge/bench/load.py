"""``python -m bridge.bench.load CONFIG_JSON``: many lean Twilio callers in one process.

A caller does what ``bridge.sim.caller.simulate_call`` does on the wire (signed voice
webhook, TwiML, signed media handshake, ``connected``/``start``, 20 ms μ-law frames at the
real-time pace, mark echoes, ``stop``), reusing the simulator's builders and its strict
``parse_outbound``, but keeps no audio and no timeline, so hundreds fit on one core:
media frames are pre-encoded once and formatted, the far end is reduced to a clock, and
one pacer task per process (``Group.pace``) sends every caller's frames on a 1 ms grid.

What a caller measures, and the far end's clock: ``bridge.bench.measure``.

Line protocol with the parent (``bridge.bench.main``): prints ``{"event": "live"}`` once
every call is streaming (or failed); reads ``window`` (reset the figures) and ``stop``
(freeze them, hang up every call, print ``{"event": "result", ...}`` and exit).
"""

from __future__ import annotations

import asyncio
import binascii
import heapq
import json
import math
import random
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.audio.resample import resample_offline
from bridge.bench.measure import ClientStats, FarEndClock
from bridge.bench.server import pin
from bridge.sim import messages
from bridge.sim.caller import FRAME_BYTES, FRAME_S, load_caller_audio, new_sid
from bridge.sim.errors import StreamRejected, TwilioWouldReject, WebhookRejected
from bridge.sim.far_end import OutClear, OutMark, OutMedia, parse_outbound
from bridge.sim.result import RATE
from bridge.sim.ulaw import ulaw_encode
from bridge.sim.webhook import (
    VOICE_PATH,
    open_stream,
    parse_twiml,
    post_voice_webhook,
    voice_params,
)

LAG_TICK_S = 0.01
PACE_TICK_S = 0.001  # the pacer's grid: a frame leaves at most this late
# The exact text ``messages.media`` builds, with the base64 payload encoded once per frame.
MEDIA = (
    '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
)


def media_text(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, b64: str) -> str:
    return MEDIA % (seq, chunk, timestamp_ms, b64, stream_sid)


def caller_frames(wav: Path, pause_s: float = 1.0, *, codec: str = "mulaw") -> list[str]:
    """The caller's audio (plus a pause) as base64 20 ms frames, to be looped.

    ``codec`` "mulaw": what Twilio sends (160 bytes of μ-law 8 kHz per frame). "pcm24":
    the same speech already in the model's format (960 bytes of PCM16LE 24 kHz), for the
    relay baseline, so the agent hears speech and answers although nothing is converted.
    """
    pcm = load_caller_audio(wav)
    pcm = np.concatenate([pcm, np.zeros(int(pause_s * RATE), np.int16)])
    pcm = pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES]
    if codec == "pcm24":
        wire = resample_offline(pcm, RATE, 24000).astype("<i2").tobytes()
        size = FRAME_BYTES * 3 * 2
    else:
        wire, size = ulaw_encode(pcm), FRAME_BYTES
    return [
        binascii.b2a_base64(wire[i : i + size], newline=False).decode()
        for i in range(0, len(wire) - size + 1, size)
    ]


class Group:
    """What the callers of one process share: the figures and the stop signal."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.stats = ClientStats()
        self.stopping = False
        self.streaming = 0
        self.setup_failed = 0
        self.closed_by_server = 0
        self.failures: list[str] = []
        self.all_started = asyncio.Event()
        self.streaming_callers: set[LeanCaller] = set()
        self._due: list[tuple[float, int, LeanCaller]] = []  # (next frame due, n, caller)
        self._added = 0

    def started(self, ok: bool, why: str = "") -> None:
        if ok:
            self.streaming += 1
        else:
            self.setup_failed += 1
            if len(self.failures) < 5:
                self.failures.append(why)
        if self.streaming + self.setup_failed >= self.calls:
            self.all_started.set()

    def stream(self, caller: LeanCaller) -> None:
        """Pace ``caller``'s frames from now on (its first is due 20 ms after its start)."""
        self.streaming_callers.add(caller)
        self._added += 1
        heapq.heappush(self._due, (caller.next_frame_at, self._added, caller))

    def stop(self) -> None:
        self.stopping = True
        for caller in list(self.streaming_callers):
            caller.end()

    async def pace(self) -> None:
        """Send every caller's due frames and echo its due marks, from one task on a grid
        of ``PACE_TICK_S``: one timer for the process, not one per caller per frame, so
        the generator's own cost stays out of the way of the calls it makes."""
        loop = asyncio.get_running_loop()
        due = self._due
        while not self.stopping:
            while due and due[0][0] <= loop.time() + 1e-4:
                _, n, caller = heapq.heappop(due)
                if caller.ended.is_set():
                    continue
                try:
                    await caller.tick(loop.time())
                except ConnectionClosed:
                    caller.end()
                    continue
                heapq.heappush(due, (caller.next_frame_at, n, caller))
            await asyncio.sleep(PACE_TICK_S - loop.time() % PACE_TICK_S)


# --------------------------------------------------------------------------- one caller


class LeanCaller:
    def __init__(self, group: Group, frames: list[str], offset: int) -> None:
        self.group = group
        self.frames = frames
        self.offset = offset
        self.call_sid = new_sid("CA")
        self.account_sid = new_sid("AC")
        self.stream_sid = new_sid("MZ")
        self.far = FarEndClock()
        self.seq = 0
        self.hanging_up = False
        self.closed = False
        self.ended = asyncio.Event()  # hang up: the group stops, or the server closed
        self.ws: ClientConnection | None = None
        self.t0 = 0.0
        self.k = 0  # frames sent
        self.next_frame_at = math.inf

    async def run(self, cfg: dict[str, Any]) -> None:
        try:
            ws = await self._setup(cfg)
        except (WebhookRejected, StreamRejected, OSError) as exc:
            self.group.started(False, f"{type(exc).__name__}: {exc}")
            return
        async with ws:
            await self._stream(ws)

    async def _setup(self, cfg: dict[str, Any]) -> ClientConnection:
        base_url, public_url, token = cfg["base_url"], cfg["public_url"], cfg["auth_token"]
        params = voice_params(self.call_sid, self.account_sid, "+15550001111", "+15550002222")
        twiml, _ = await post_voice_webhook(
            base_url, params, public_url=public_url, auth_token=token, timeout=30.0
        )
        target = parse_twiml(twiml, request_url=public_url + VOICE_PATH, require_wss=False)
        self.parameters = target.parameters
        return await open_stream(target, base_url, public_url, token)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def _stream(self, ws: ClientConnection) -> None:
        group = self.group
        sid = self.stream_sid
        await ws.send(messages.connected())
        await ws.send(
            messages.start(
                self._next_seq(),
                stream_sid=sid,
                account_sid=self.account_sid,
                call_sid=self.call_sid,
                custom_parameters=self.parameters,
            )
        )
        self.ws, self.t0 = ws, asyncio.get_running_loop().time()
        self.next_frame_at = self.t0 + FRAME_S
        group.started(True)
        receiver = asyncio.create_task(self._receive(ws))
        if not group.stopping:
            group.stream(self)  # group.pace sends its frames from now on
            await self.ended.wait()
            self.end()  # out of the pacer's set, if it ended before it was in
        try:
            if not self.closed:
                self.hanging_up = True
                await ws.send(
                    messages.stop(
                        self._next_seq(),
                        stream_sid=sid,
                        account_sid=self.account_sid,
                        call_sid=self.call_sid,
                    )
                )
                await ws.close(1000)
        except ConnectionClosed:
            pass
        finally:
            self.hanging_up = True
            await receiver

    def end(self) -> None:
        self.group.streaming_callers.discard(self)
        self.ended.set()

    async def tick(self, now: float) -> None:
        """Send the frames due by ``now`` (frame k is whole at t0 + (k+1) * 20 ms) and echo
        the marks the far end has played through."""
        ws = self.ws
        assert ws is not None
        due = self.next_frame_at
        while due <= now + 1e-4 and not self.ended.is_set():
            stats = self.group.stats
            lag = now - due
            stats.send_lag.add(max(lag, 0.0) * 1000)
            if lag > FRAME_S:
                stats.send_late += 1
            b64 = self.frames[(self.offset + self.k) % len(self.frames)]
            await ws.send(
                media_text(self._next_seq(), self.stream_sid, self.k + 1, self.k * 20, b64)
            )
            stats.frames_sent += 1
            self.k += 1
            due = self.next_frame_at = self.t0 + (self.k + 1) * FRAME_S
        for name in self.far.due_marks(now):
            await self._echo(ws, name)

    async def _echo(self, ws: ClientConnection, name: str) -> None:
        await ws.send(messages.mark(self._next_seq(), stream_sid=self.stream_sid, name=name))
        self.group.stats.marks_echoed += 1

    async def _receive(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        far, group = self.far, self.group
        try:
            async for message in ws:
                now = loop.time()
                if self.hanging_up:
                    continue
                stats = group.stats
                try:
                    command = parse_outbound(message, self.stream_sid)
                except TwilioWouldReject:
                    stats.violations += 1
                    continue
                if type(command) is OutMedia:
                    stats.media_in += 1
                    far.media(len(command.payload), now)
                elif type(command) is OutMark:
                    stats.marks_in += 1
                    far.mark(command.name, stats)
                elif type(command) is OutClear:
                    stats.clears += 1
                    for name in far.clear(now):
                        await self._echo(ws, name)
        except ConnectionClosed:
            pass
        finally:
            if not self.hanging_up and not group.stopping:
                group.closed_by_server += 1
            self.closed = True
            self.end()


# --------------------------------------------------------------------------- the process


async def _watch_loop(group: Group) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_TICK_S
        await asyncio.sleep(LAG_TICK_S)
        group.stats.loop_lag.add(max(0.0, loop.time() - due) * 1000)


def _commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, "stop")


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run(cfg: dict[str, Any]) -> int:
    loop = asyncio.get_running_loop()
    n = int(cfg["calls"])
    group = Group(n)
    if n == 0:
        group.all_started.set()
    frames = caller_frames(Path(cfg["caller_wav"]), codec=cfg.get("codec", "mulaw"))
    rng = random.Random(cfg.get("seed", 0))
    commands: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(target=_commands, args=(loop, commands), daemon=True).start()
    watcher = asyncio.create_task(_watch_loop(group))
    pacer = asyncio.create_task(group.pace())
    tasks = []
    for _ in range(n):
        caller = LeanCaller(group, frames, rng.randrange(len(frames)))
        tasks.append(asyncio.create_task(caller.run(cfg)))
        await asyncio.sleep(float(cfg.get("stagger_s", 0.02)))
    await group.all_started.wait()
    _say({"event": "live", "streaming": group.streaming, "setup_failed": group.setup_failed})
    while (command := await commands.get()) != "stop":
        if command == "window":
            group.stats = ClientStats()
    result = group.stats
    group.stats = ClientStats()  # hang-up traffic is not counted
    group.stop()
    if tasks:
        await asyncio.wait(tasks, timeout=15.0)
    watcher.cancel()
    pacer.cancel()
    _say(
        {
            "event": "result",
            "stats": result.dump(),
            "calls": n,
            "streaming": group.streaming,
            "setup_failed": group.setup_failed,
            "closed_by_server": group.closed_by_server,
            "failures": group.failures,
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cfg = json.loads(args[0])
    pin(cfg.get("cpu"))
    return asyncio.run(run(cfg))


if __name__ == "__main__":
    sys.exit(main())
