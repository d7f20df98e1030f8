"""Whole companion sessions over loopback: the real server, the local agent, ``websockets``.

The local agent echoes the caller after ~0.5 s of silence; the client is written from the
protocol's description (``helpers.CompanionClient``).
"""

import asyncio
import contextlib
from functools import partial

import numpy as np

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.companion.helpers import RATE, CompanionClient
from tests.e2e import until
from tests.softphone.helpers import best_correlation, caller_speech, coarse_lag, utterance


@contextlib.asynccontextmanager
async def rigged(settings: Settings | None = None):
    agent = await serve_local_agent(seed=1)
    try:
        async with running_bridge(settings or Settings(), model_url=agent.url) as bridge:
            yield bridge, agent
    finally:
        await agent.close()


def test_conversation_echo_and_barge_in():
    """Speak, hear the echo (correlated with what was said), talk over it."""

    async def main():
        async with rigged() as (bridge, agent):
            client = await CompanionClient.open(bridge.base_url)
            await client.start(voice={"voice": "nova", "speed": 1.2, "pitch": 1.0, "volume": 1})
            ready = client.of("session_ready")[0]
            assert ready["voice"] == "coral" and ready["model"] == "gpt-realtime"
            assert ready["sessionId"].startswith("CO")
            update = agent.sessions[0].received["session.update"][0]["session"]
            assert update["audio"]["output"] == {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "coral",
                "speed": 1.2,
            }
            assert (
                "empathetic" in update["instructions"] and "Do not joke" in update["instructions"]
            )

            await client.send_audio(caller_speech(RATE))
            listening = asyncio.create_task(client.send_audio(np.zeros(RATE * 10, np.int16)))
            await client.wait_for(lambda: client.audio, "the echo")
            echo_item = next(iter(client.audio))
            await client.wait_for(
                lambda: len(client.audio[echo_item]) >= 1.5 * RATE * 2, "1.5 s of echo"
            )
            listening.cancel()
            said = utterance(RATE)
            barge = asyncio.create_task(client.send_audio(said[: RATE * 2]))
            await client.wait_for(lambda: len(client.of("speech_started")) >= 2, "barge-in")
            received_ms = len(client.audio[echo_item]) / 2 / RATE * 1000
            await barge
            runner = next(iter(bridge.services.calls))
            cut = runner.call.barge_ins[0]
            assert cut.item_id == echo_item and cut.audio_end_ms is not None
            # Paced at real time and counted as heard at its modelled end: the cut is at
            # most what had been sent to the client.
            assert 1000 <= cut.audio_end_ms <= received_ms + 100, (cut, received_ms)
            session = agent.sessions[0]
            await until(lambda: session.truncates, "the truncate at the agent")
            assert [t[0] for t in session.truncates] == [echo_item]
            assert session.errors == []

            # The echo is what was said.
            heard = np.frombuffer(bytes(client.audio[echo_item]), "<i2")
            lag = coarse_lag(said, heard)
            assert abs(lag) < RATE // 2, f"echo is {lag} samples off"
            n = int(1.2 * RATE)
            score = best_correlation(said[max(-lag, 0) :][:n], heard[max(lag, 0) :][:n], max_lag=40)
            assert score > 0.9, f"echo correlation {score:.3f}"

            started = client.of("speech_started")[0]
            assert started["itemId"] and isinstance(started["audioStartMs"], int)
            await client.wait_for(lambda: client.of("transcription"), "transcription")
            assert "caller speech" in client.of("transcription")[0]["transcript"]
            await client.wait_for(lambda: client.of("response_complete"), "response_complete")
            done = client.of("response_complete")[0]
            deltas = [d for d in client.of("audio_delta") if d["itemId"] == echo_item]
            assert done["responseId"] == deltas[0]["responseId"]
            assert done["status"] in ("completed", "cancelled") and "usage" in done
            await client.close()
            await until(lambda: not bridge.services.calls, "the session to end")

    asyncio.run(main())


def test_volume_is_applied_as_gain():
    async def main():
        async with rigged() as (bridge, _):
            loud = await CompanionClient.open(bridge.base_url)
            soft = await CompanionClient.open(bridge.base_url)
            await loud.start("a", voice={"voice": "alloy", "volume": 1.0})
            await soft.start("b", voice={"voice": "alloy", "volume": 0.5})
            speech = caller_speech(RATE, tail_s=1.5)
            await asyncio.gather(loud.send_audio(speech), soft.send_audio(speech))
            for c in (loud, soft):
                await c.wait_for(partial(c.of, "response_complete"), "the echo")
            rms = [
                float(np.sqrt(np.mean(np.frombuffer(bytes(b), "<i2").astype(float) ** 2)))
                for c in (loud, soft)
                for b in c.audio.values()
            ]
            assert 0.4 < rms[1] / rms[0] < 0.6, rms
            await loud.close()
            await soft.close()

    asyncio.run(main())
