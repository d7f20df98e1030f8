"""A Node client using the browser ``WebSocket`` API shape (``voice_client.js``, with the
``ws`` package where Node lacks a global ``WebSocket``) holds a conversation: it waits for
``AIConnected``, speaks, and hears its words back (judged by correlation)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bridge.agents import Agent
from bridge.config import Settings
from bridge.harness import running_bridge
from tests.softphone.helpers import ROOT, best_correlation, caller_speech, coarse_lag, utterance
from tests.wsvoice.helpers import ws_url

CLIENT = Path(__file__).with_name("voice_client.js")


def test_a_browser_shaped_client_hears_its_echo(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "ws").is_dir():
        pytest.fail("node and node_modules/ws are needed: run `npm ci`")
    rate = 16000
    pcm = tmp_path / "caller.pcm"
    pcm.write_bytes(caller_speech(rate).astype("<i2").tobytes())

    async def main() -> dict[str, object]:
        async with running_bridge(Settings(agents=(Agent(greeting=""),))) as bridge:
            proc = await asyncio.create_subprocess_exec(
                node,
                str(CLIENT),
                ws_url(bridge.base_url),
                str(pcm),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
            return result

    got = asyncio.run(main())
    events = got["events"]
    assert isinstance(events, list)
    names = [e.get("name") or e["type"] for e in events]
    assert names[0] == "AIConnected", names
    for name in ("AISpeechDetected", "AISpeechEnded", "AIResponseStart", "textDelta"):
        assert name in names, names
    assert isinstance(got["audio"], str)
    heard = np.frombuffer(base64.b64decode(got["audio"]), "<i2")
    said = utterance(rate)
    lag = coarse_lag(said, heard)
    assert abs(lag) < rate // 2, f"echo is {lag} samples off"
    n = int(1.2 * rate)
    score = best_correlation(said[max(-lag, 0) :][:n], heard[max(lag, 0) :][:n], max_lag=40)
    assert score > 0.9, f"echo correlation {score:.3f}"
