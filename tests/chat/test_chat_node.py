"""The documented ``/chat/v1`` snippet, run by Node's ``socket.io-client`` against the
running bridge and the local agent: welcome message, ``clear``, the echo (judged by its
correlation with what was said), and a spoken reply to typed text.
"""

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
from tests.chat.helpers import no_calls
from tests.softphone.helpers import ROOT, best_correlation, caller_speech, coarse_lag, utterance

SNIPPET = Path(__file__).with_name("chat_snippet.js")


def test_the_documented_snippet_holds_a_conversation(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("node and node_modules/socket.io-client are needed: run `npm ci`")
    rate = 16000
    pcm = tmp_path / "caller.pcm"
    pcm.write_bytes(caller_speech(rate).astype("<i2").tobytes())
    settings = Settings(agents=(Agent(name="support"),), default_agent="support")

    async def main() -> dict[str, object]:
        async with running_bridge(settings) as bridge:
            proc = await asyncio.create_subprocess_exec(
                node,
                str(SNIPPET),
                bridge.base_url,
                str(pcm),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            await no_calls(bridge)
            result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
            return result

    got = asyncio.run(main())
    assert got["errors"] == []
    assert got["welcome"] == {"sample_rate": rate, "stream_sid": None, "item_id": got["order"][0]}  # type: ignore[index]
    texts = got["texts"]
    assert isinstance(texts, list) and all({"data", "role", "final"} <= set(t) for t in texts)
    assert isinstance(got["clears"], int) and got["clears"] >= 2  # ours, then the text's barge-in
    items = got["items"]
    assert isinstance(items, dict)
    order = got["order"]
    assert isinstance(order, list) and len(order) >= 3
    echo = np.frombuffer(b"".join(base64.b64decode(c) for c in items[order[1]].split("|")), "<i2")
    said = utterance(rate)
    lag = coarse_lag(said, echo)
    assert abs(lag) < rate // 2, f"echo is {lag} samples off"
    n = int(1.2 * rate)
    score = best_correlation(said[max(-lag, 0) :][:n], echo[max(lag, 0) :][:n], max_lag=40)
    assert score > 0.9, f"echo correlation {score:.3f}"
    assert any(t["role"] == "assistant" and t["final"] for t in texts)
