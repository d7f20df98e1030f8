"""Helpers for whole-call tests over real loopback sockets: bridge + local agent + simulator.

The simulator, the bridge and the agent share one event loop, so on a loaded host they
stall together, and the simulated far end (whose clock is the wall clock, as a real one's
is) keeps playing through the stall. Tests therefore judge what was actually delivered,
and when, rather than expect the wall clock to keep pace:

* ``until`` polls for a condition with a generous deadline instead of sleeping;
* ``match_through_gaps`` finds an utterance in what the caller heard even when the far end
  ran dry for a moment and played a little silence in the middle of it;
* ``CallClock`` and ``played_when_cut`` put the bridge's barge-in and the far end's
  ``clear`` on one clock, so a truncation is compared with what the caller had heard when
  the bridge cut, not with what it heard by the time the ``clear`` got through.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bridge.audio.wav import read_wav
from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge, signed_settings
from bridge.local_agent import LocalAgentServer, serve_local_agent
from bridge.server import free_socket
from bridge.sim.result import RATE, CallResult, ClearRecord, TimelineEvent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Generous: a deadline only ever ends a test that is failing anyway.
PATIENCE_S = 30.0


@contextlib.contextmanager
def bridge_serve(cwd: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real ``bridge serve`` process on a free loopback port (the local agent, no keys,
    no records, unsigned, plus ``env``) and its base URL, once ``/healthz`` answers. Killed
    at the end if the test left it running."""
    with free_socket() as sock:
        port = sock.getsockname()[1]
    environ = {k: v for k, v in os.environ.items() if k not in ("WORKERS", "AGENTS_FILE")}
    environ.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        HOST="127.0.0.1",
        PORT=str(port),
        RECORDS_PATH="off",
        OPENAI_API_KEY="",
        TWILIO_AUTH_TOKEN="",
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve"],
        cwd=cwd,  # no stray .env
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE_S
        while True:  # up once /healthz answers
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "bridge serve did not start"
            time.sleep(0.05)
        yield proc, base_url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class Rig:
    bridge: RunningBridge
    agent: LocalAgentServer


@contextlib.asynccontextmanager
async def rig(
    settings: Settings | None = None,
    *,
    agent_options: dict[str, Any] | None = None,
    model_url: str | None = None,
) -> AsyncIterator[Rig]:
    """A signed bridge whose calls go to a local agent we can inspect."""
    agent = await serve_local_agent("127.0.0.1", 0, **(agent_options or {}))
    try:
        async with running_bridge(
            signed_settings(settings), model_url=model_url or agent.url
        ) as bridge:
            yield Rig(bridge, agent)
    finally:
        await agent.close()


def run_undisturbed(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` with the heap of earlier tests kept out of the garbage collector.

    The simulator, the bridge and the agent share one event loop in these tests, so a
    pause in it holds back the simulator's handling of a ``clear`` and it records audio as
    played that a real far end would not have. Late in a full test run, the collector
    walking the heap of every earlier test pauses the loop for 20-40 ms.
    """
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(main)
    finally:
        gc.unfreeze()


async def until(
    condition: Callable[[], object], what: str, timeout: float = PATIENCE_S, poll: float = 0.02
) -> None:
    """Wait for ``condition()`` to hold; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(poll)


def fixture(name: str) -> np.ndarray:
    audio, rate = read_wav(FIXTURES / name)
    assert rate == 8000
    return audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(8000 * seconds), dtype=np.int16)


def best_correlation(needle: np.ndarray, haystack: np.ndarray) -> tuple[float, int]:
    """Peak normalised cross-correlation of ``needle`` anywhere in ``haystack``, and where."""
    a = needle.astype(np.float64) - needle.mean()
    b = haystack.astype(np.float64)
    n = len(a)
    if len(b) < n:
        return 0.0, 0
    size = 1 << int(np.ceil(np.log2(len(b) + n)))
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[
        : len(b) - n + 1
    ]
    # Energy of each window of the haystack, for normalisation.
    cs = np.concatenate([[0.0], np.cumsum(b * b)])
    csum = np.concatenate([[0.0], np.cumsum(b)])
    win_energy = cs[n:] - cs[:-n] - (csum[n:] - csum[:-n]) ** 2 / n
    norm = np.sqrt(np.maximum(win_energy, 1e-9) * float(a @ a))
    score = corr / norm
    at = int(np.argmax(score))
    return float(score[at]), at


def match_through_gaps(
    needle: np.ndarray,
    haystack: np.ndarray,
    *,
    piece_s: float = 0.2,
    max_gap_s: float = 0.5,
    rate: int = RATE,
) -> tuple[float, int]:
    """How well ``needle`` plays out in ``haystack`` in order, and where it starts.

    A far end that runs dry for a moment (its loop stalled past the playout lead) plays a
    little silence and then the rest of the audio, intact but late; with one lag for the
    whole utterance that looks like wrong audio. So ``needle`` is cut into ``piece_s``
    pieces, each found at its own lag, never earlier than the piece before it and at most
    ``max_gap_s`` later; the score is their correlations weighted by their energy (1.0:
    every audible piece came through intact). Without gaps it is ``best_correlation``.
    """
    _, anchor = best_correlation(needle, haystack)
    piece, max_gap = int(piece_s * rate), int(max_gap_s * rate)
    # Gaps only ever delay: the start lies at or before where most of the needle matched.
    lag, first = max(0, anchor - max_gap), None
    weighted = total = 0.0
    for offset in range(0, len(needle) - piece + 1, piece):
        part = needle[offset : offset + piece]
        energy = float(np.sum(part.astype(np.float64) ** 2))
        if energy < piece * 30.0**2:  # digital silence or nearly: no lag to find
            continue
        start = lag + offset
        window = haystack[start : start + piece + max_gap]
        score, at = best_correlation(part, window)
        if first is None:
            first = start + at - offset
        lag += at
        weighted += energy * score
        total += energy
    if total == 0.0:
        return best_correlation(needle, haystack)
    return weighted / total, first if first is not None else anchor


class CallClock:
    """Where a simulated call's timeline starts on the event loop's clock.

    ``simulate_call`` stamps its timeline with ``loop.time() - t0`` (or an earlier moment)
    and reports each event through ``on_event`` at once, so ``loop.time() - event.t`` in
    the callback is ``t0`` plus the little work in between: the least over the call is
    ``t0`` to well within a millisecond. The bridge's clock (``time.monotonic``) is the
    default loop's clock, so bridge and simulator times can be compared.
    """

    def __init__(self) -> None:
        self.t0 = math.inf

    def on_event(self, event: TimelineEvent) -> None:
        self.t0 = min(self.t0, asyncio.get_running_loop().time() - event.t)


def played_when_cut(
    result: CallResult, clock: CallClock, clear: ClearRecord, cut_at: float
) -> tuple[float, float]:
    """What the far end had played of ``clear.item_id`` at ``cut_at`` (bridge clock), in ms:
    the bounds ``(low, high)``.

    ``clear.played_ms`` is what it had played when the ``clear`` reached it, a moment after
    the bridge cut. Meanwhile it played on, at real-time pace at most (``low``) and at
    least the audible samples it put out (``high``; it plays digital silence when it runs
    dry). With the ``clear`` delivered at once both bounds are ``clear.played_ms``.
    """
    cut = cut_at - clock.t0  # on the call's timeline, like clear.t
    in_flight_ms = max(0.0, clear.t - cut) * 1000.0
    end = math.floor(clear.t * RATE)
    start = min(max(0, math.floor(cut * RATE)), end)
    audible_ms = np.count_nonzero(result.heard[start:end]) * 1000.0 / RATE
    return clear.played_ms - in_flight_ms, clear.played_ms - min(audible_ms, in_flight_ms)
