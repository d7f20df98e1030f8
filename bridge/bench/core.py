"""``bridge bench --core``: the CPU a call's own logic costs, without sockets or event loop.

    bridge bench --core                    every model audio format, 30 s of call, 5 runs
    bridge bench --core --seconds 60 --runs 9 --json out/core.json

One simulated Twilio call runs through what a server does for each message: caller media
frames parsed (``MediaStream``), the ``Call`` (uplink batching and transcoding, the local
barge-in detector's levels, paced playout, marks), model events parsed, and what goes out
built (media and mark messages, appends encoded), on a simulated clock. The far end echoes
each mark once the audio before it has played. What the model and Twilio would spend making
their messages is done before the clock starts.

It measures only the part of a call's CPU that the bridge's own code decides: no WebSocket
framing, no event loop, no other calls. Its use is comparing two versions of that code on
a noisy host, where ``bridge bench``'s whole-server figures move by 10-20% from run to run:
every run here is the same work in one process, so the minimums of a few runs mostly agree
within a few percent. Run the two versions by turns, a few times each, and compare the
minimums; a host that slowed down for a while shows as one turn standing apart.

Traffic, in cycles of 10 s: the agent speaks for 4 s (its audio arrives in deltas of
40-400 ms, twice as fast as real time, as the local agent sends it) over a quiet line; from
5 to 9.5 s the caller speaks (``fixtures/speech-8k.wav``) and the model's VAD marks the
turn. Nobody barges in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from bridge import b64
from bridge.agents import Agent
from bridge.ai.events import parse_server_event
from bridge.audio.formats import ModelAudio, speaks_pcmu
from bridge.audio.g711 import ulaw_encode
from bridge.audio.resample import resample_offline
from bridge.audio.wav import read_wav
from bridge.call import Call
from bridge.phone.protocol import Media, MediaStream
from bridge.playout import SendAudio, SendMark
from bridge.sim import messages

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODES: tuple[ModelAudio, ...] = ("pcm16", "pcmu-in", "pcmu")
CYCLE_S = 10
FRAME_MS = 20
LEAD_MS = 160
# Of each 10 s: the agent speaks 4 s (played out before the caller speaks, so no barge-in),
# the caller from 5 to 9.5 s (done before the agent's next turn).
AGENT_S = 4
CALLER_FROM_S, CALLER_TO_S = 5, 9.5
STREAM_SID = "MZ" + "0" * 32


@dataclass
class Traffic:
    """What crossed the call's edges in one run: a run that moved no audio measured nothing."""

    frames_in: int = 0
    appends: int = 0
    append_bytes: int = 0
    media_out: int = 0
    media_bytes: int = 0
    marks: int = 0


@dataclass
class Result:
    mode: str
    seconds: int
    us_per_call_s: list[float]  # one per run
    traffic: Traffic

    @property
    def median(self) -> float:
        return statistics.median(self.us_per_call_s)

    @property
    def best(self) -> float:
        return min(self.us_per_call_s)


def _speech() -> tuple[np.ndarray, np.ndarray]:
    caller, rate = read_wav(FIXTURES / "speech-8k.wav")
    assert rate == 8000
    agent, rate = read_wav(FIXTURES / "speech-24k.wav")
    assert rate == 24000
    return caller, agent


def _caller_frames(caller: np.ndarray, seconds: int) -> list[str]:
    """Twilio ``media`` messages, one per 20 ms: quiet while the agent speaks, then speech."""
    quiet = (np.random.default_rng(7).standard_normal(CYCLE_S * 8000) * 30).astype(np.int16)
    line = quiet.copy()  # a quiet line, about -60 dBFS, and the caller's turn on it
    talk_from, talk_to = int(CALLER_FROM_S * 8000), int(CALLER_TO_S * 8000)
    line[talk_from:talk_to] = np.resize(caller, talk_to - talk_from)
    cycle = ulaw_encode(line)
    frames = []
    for n in range(seconds * 1000 // FRAME_MS):
        at = n * FRAME_MS * 8 % len(cycle)
        payload = cycle[at : at + FRAME_MS * 8]
        frames.append(
            messages.media(
                n + 2,
                stream_sid=STREAM_SID,
                chunk=n + 1,
                timestamp_ms=n * FRAME_MS,
                payload=payload,
            )
        )
    return frames


def _model_events(agent: np.ndarray, seconds: int, pcmu: bool) -> list[tuple[float, str]]:
    """(due s, server event) for every turn: the agent's, then the caller's VAD events."""
    rnd = random.Random(11)
    voice = np.resize(agent, AGENT_S * 24000)
    audio = ulaw_encode(resample_offline(voice, 24000, 8000)) if pcmu else voice.tobytes()
    per_ms = 8 if pcmu else 48
    events: list[tuple[float, str]] = []

    def add(at: float, kind: str, **fields: Any) -> None:
        events.append((at, orjson.dumps({"type": kind, "event_id": "event_x", **fields}).decode()))

    for turn in range(seconds // CYCLE_S):
        start = turn * CYCLE_S
        rid, iid = f"resp_{turn}", f"item_{turn}"
        where = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        add(start, "response.created", response={"id": rid, "status": "in_progress"})
        item = {"id": iid, "type": "message", "role": "assistant", "status": "in_progress"}
        add(start, "response.output_item.added", response_id=rid, output_index=0, item=item)
        sent = 0
        while sent < len(audio):
            size = rnd.randrange(40, 401) * per_ms
            chunk = audio[sent : sent + size]
            at = start + sent / per_ms / 2000
            add(at, "response.output_audio.delta", **where, delta=b64.encode(chunk))
            sent += len(chunk)
        done_at = start + sent / per_ms / 2000
        add(done_at, "response.output_audio.done", **where)
        add(done_at, "response.done", response={"id": rid, "status": "completed", "usage": {}})
        user = {"audio_start_ms": 0, "item_id": f"user_{turn}"}
        add(start + CALLER_FROM_S + 0.3, "input_audio_buffer.speech_started", **user)
        user = {"audio_end_ms": 0, "item_id": f"user_{turn}"}
        add(start + CALLER_TO_S + 0.5, "input_audio_buffer.speech_stopped", **user)
    return events


def run_once(
    mode: ModelAudio, frames: list[str], events: list[tuple[float, str]]
) -> tuple[float, Traffic]:
    """One call, as long as ``frames``; returns (CPU seconds, traffic)."""
    stream = MediaStream()
    stream.receive(
        messages.start(
            1,
            stream_sid=STREAM_SID,
            account_sid="AC" + "2" * 32,
            call_sid="CA" + "1" * 32,
            custom_parameters={},
        )
    )
    agent = dataclasses.replace(Agent(), model_audio=mode, greeting="")
    call = Call.for_leg(
        agent=agent,
        call_sid="CA1",
        codec="mulaw",
        rate=8000,
        lead_ms=LEAD_MS,
        now=0.0,
        uplink_batch_ms=60,
    )
    call.model_connected(0.0)
    call.to_model.clear()
    traffic = Traffic()
    echoes: deque[tuple[float, str]] = deque()  # (when the far end echoes it, mark)
    far_end_free = 0.0  # when the far end has played everything it was sent
    pending = deque(events)

    def drain(now: float) -> None:
        nonlocal far_end_free
        for out in call.to_phone:
            if type(out) is SendAudio:
                stream.media(out.payload)
                traffic.media_out += 1
                traffic.media_bytes += len(out.payload)
                far_end_free = max(far_end_free, now) + len(out.payload) / 8000
            elif type(out) is SendMark:
                stream.mark(out.name)
                traffic.marks += 1
                echoes.append((far_end_free, out.name))
        call.to_phone.clear()
        for event in call.to_model:
            orjson.dumps(event)
            if event["type"] == "input_audio_buffer.append":
                traffic.appends += 1
                traffic.append_bytes += len(event["audio"]) * 3 // 4 - event["audio"][-2:].count(
                    "="
                )
        call.to_model.clear()
        call.events.clear()

    cpu = time.process_time()
    for n, frame in enumerate(frames):
        now = n * FRAME_MS / 1000
        while echoes and echoes[0][0] <= now:
            at, name = echoes.popleft()
            call.phone_mark(name, at)
            drain(at)
        while (due := call.next_due(now)) is not None and due <= now:
            call.tick(due)
            drain(due)
        while pending and pending[0][0] <= now:
            at, text = pending.popleft()
            call.model_event(parse_server_event(text), now)
            drain(now)
        media = stream.receive(frame)
        assert type(media) is Media
        call.phone_audio(media.payload, now)
        traffic.frames_in += 1
        drain(now)
    return time.process_time() - cpu, traffic


def measure(mode: ModelAudio, seconds: int, runs: int) -> Result:
    caller, agent = _speech()
    frames = _caller_frames(caller, seconds)
    events = _model_events(agent, seconds, speaks_pcmu(mode))
    samples: list[float] = []
    traffic = Traffic()
    with threadpool_limits(1, user_api="blas"):  # as a serving process runs
        run_once(mode, frames[: CYCLE_S * 1000 // FRAME_MS], events)  # warm caches
        for _ in range(runs):
            cpu_s, traffic = run_once(mode, frames, events)
            samples.append(cpu_s / seconds * 1e6)
    return Result(mode, seconds, samples, traffic)


def render(results: list[Result]) -> str:
    lines = [
        "Call core (sans-I/O): CPU per second of call, one simulated Twilio call",
        f"{'model audio':12} {'median us':>10} {'min us':>8} {'runs':>5}  traffic per run",
    ]
    for r in results:
        t = r.traffic
        lines.append(
            f"{r.mode:12} {r.median:10.0f} {r.best:8.0f} {len(r.us_per_call_s):5d}  "
            f"{t.frames_in} frames in, {t.appends} appends, {t.media_out} media and "
            f"{t.marks} marks out"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bridge bench --core",
        description="The CPU a call's own logic costs per second of call, without sockets or "
        "event loop, for each model audio format (bridge/bench/core.py says how).",
    )
    parser.add_argument("--core", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--seconds", type=int, default=30, help="call length per run (multiple of 10)"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per format (median, min)")
    parser.add_argument("--modes", default=",".join(MODES), help="model audio formats to run")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if args.seconds < CYCLE_S or args.seconds % CYCLE_S:
        parser.error(f"--seconds must be a positive multiple of {CYCLE_S}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    asked = [m for m in args.modes.split(",") if m]
    if unknown := set(asked) - set(MODES):
        parser.error(f"unknown model audio {sorted(unknown)}; choose from {list(MODES)}")
    modes = [m for m in MODES if m in asked]
    results = [measure(mode, args.seconds, args.runs) for mode in modes]
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = [
            {**dataclasses.asdict(r), "median_us": r.median, "min_us": r.best} for r in results
        ]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
