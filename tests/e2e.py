"""Helpers for whole-call tests over real loopback sockets: bridge + local agent + simulator."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.wav import read_wav
from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge, signed_settings
from bridge.local_agent import LocalAgentServer, serve_local_agent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


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
