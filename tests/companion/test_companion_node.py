"""A Node client written against the browser ``WebSocket`` API holds a conversation."""

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.companion.helpers import RATE, ws_url
from tests.companion.test_companion_calls import rigged
from tests.softphone.helpers import best_correlation, caller_speech, coarse_lag, utterance

CLIENT = Path(__file__).with_name("client.mjs")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_browser_style_client_hears_the_echo(tmp_path):
    speech_path, out_path = tmp_path / "speech.pcm", tmp_path / "heard.pcm"
    speech_path.write_bytes(caller_speech(RATE).astype("<i2").tobytes())

    async def main():
        async with rigged() as (bridge, agent):
            node = await asyncio.create_subprocess_exec(
                "node",
                str(CLIENT),
                ws_url(bridge.base_url),
                str(speech_path),
                str(out_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(node.communicate(), 60)
            assert node.returncode == 0, err.decode()
            kinds = json.loads(out)["kinds"]
            assert kinds[0] == "session_ready" and "audio_delta" in kinds
            assert "transcription" in kinds and "speech_started" in kinds
            update = agent.sessions[0].received["session.update"][0]["session"]
            assert update["audio"]["output"]["voice"] == "shimmer"
            assert "playful" in update["instructions"]

    asyncio.run(main())
    said = utterance(RATE)
    heard = np.frombuffer(out_path.read_bytes(), "<i2")
    lag = coarse_lag(said, heard)
    n = int(1.2 * RATE)
    score = best_correlation(said[max(-lag, 0) :][:n], heard[max(lag, 0) :][:n], max_lag=40)
    assert score > 0.9, f"echo correlation {score:.3f}"
