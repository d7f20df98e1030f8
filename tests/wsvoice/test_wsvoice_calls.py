"""Raw PCM voice clients end to end: the real server (uvicorn), the local agent, and a
``websockets`` client written from the protocol description (``helpers.VoiceClient``).

Judged on what the client was sent (echo correlation, how much audio, in what order), never
on how fast a loaded host managed it.
"""

import asyncio
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.agents import Agent
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import load_greeting, serve_local_agent
from tests.softphone.helpers import best_correlation, caller_speech, coarse_lag, utterance
from tests.wsvoice.helpers import PATIENCE_S, VoiceClient, ws_url

QUIET = (Agent(greeting=""),)
LEAD_MS = 160  # Settings.playout_lead_ms: what the bridge may send ahead of real time


def echo_score(said: np.ndarray, heard: np.ndarray, rate: int) -> float:
    lag = coarse_lag(said, heard)
    assert abs(lag) < rate // 2, f"echo is {lag} samples off"
    aligned, ref = heard[max(lag, 0) :], said[max(-lag, 0) :]
    n = int(1.2 * rate)
    return best_correlation(ref[:n], aligned[:n], max_lag=40)


def test_conversation_echo_events_pacing_and_barge_in():
    rate = 16000

    async def main():
        agent = await serve_local_agent(seed=3)
        try:
            async with running_bridge(Settings(agents=QUIET), model_url=agent.url) as bridge:
                client = await VoiceClient.open(ws_url(bridge.base_url), rate=rate)
                await client.wait_for(lambda: client.named("AIConnected"), "AIConnected")
                first = client.events[0]
                assert first["name"] == "AIConnected" and first["sessionId"].startswith("WV")

                await client.send_audio(caller_speech(rate))
                listening = asyncio.create_task(client.send_audio(np.zeros(rate * 8, np.int16)))
                await client.wait_for(lambda: len(client.audio) >= 2 * rate * 2, "2 s of echo")
                listening.cancel()
                names = [e.get("name") or e["type"] for e in client.events]
                assert names.index("AISpeechDetected") < names.index("AISpeechEnded")
                assert names.index("AISpeechEnded") < names.index("AIResponseStart")
                assert names.index("AIResponseStart") < names.index("textDelta")

                # Paced at real time: never far ahead of the clock (the agent itself sends
                # 4 times faster). The slack covers a first chunk that reached us late.
                t_first, _ = client.arrivals[0]
                for t, total in client.arrivals:
                    allowed = ((t - t_first) * 1000 + LEAD_MS + 500) * rate * 2 / 1000
                    assert total <= allowed, (t - t_first, total, allowed)
                assert client.arrivals[-1][0] - t_first > 1.2  # 2 s of audio took its time

                said = utterance(rate)
                heard = np.frombuffer(bytes(client.audio), "<i2")
                score = echo_score(said, heard, rate)
                assert score > 0.9, f"echo correlation {score:.3f}"

                # Barge in over the echo: its audio stops well before its end.
                await client.send_audio(said[: rate * 2])
                await client.wait_for(lambda: client.named("AIResponseEnd"), "AIResponseEnd")
                end = client.named("AIResponseEnd")[0]
                assert "caller speech" in end["finalText"], end
                heard_bytes = len(client.audio)
                assert heard_bytes < (said.size - rate) * 2, (heard_bytes, said.size * 2)
                session = agent.sessions[0]
                await client.wait_for(lambda: session.truncates, "the truncate at the agent")
                runner = next(iter(bridge.services.calls))
                cut = runner.call.barge_ins[0]
                assert cut.audio_end_ms is not None
                # Truncated at what the schedule says was heard: about what was sent.
                sent_ms = heard_bytes / (rate * 2) * 1000
                assert sent_ms - LEAD_MS - 200 <= cut.audio_end_ms <= sent_ms + 40, (cut, sent_ms)
                assert session.errors == []
                await client.close()
                await _no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())


def test_other_rates_and_the_root_path():
    """8 kHz at ``/`` holds a conversation; 48 kHz gets the greeting at its full length."""

    async def main():
        agent = await serve_local_agent(seed=4)
        try:
            async with running_bridge(Settings(agents=QUIET), model_url=agent.url) as bridge:
                rate = 8000
                client = await VoiceClient.open(ws_url(bridge.base_url, "/", rate=rate), rate=rate)
                await client.wait_for(lambda: client.named("AIConnected"), "AIConnected")
                await client.send_audio(caller_speech(rate))
                listening = asyncio.create_task(client.send_audio(np.zeros(rate * 8, np.int16)))
                await client.wait_for(lambda: client.named("AIResponseEnd"), "the whole echo")
                listening.cancel()
                heard = np.frombuffer(bytes(client.audio), "<i2")
                score = echo_score(utterance(rate), heard, rate)
                assert score > 0.85, f"echo correlation at 8 kHz {score:.3f}"
                await client.close()

            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                rate = 48000
                client = await VoiceClient.open(ws_url(bridge.base_url, rate=rate), rate=rate)
                await client.wait_for(lambda: client.named("AIResponseEnd"), "the greeting")
                greeting_s = len(load_greeting()) / 48000
                # The model's reply ends before its audio has played out: wait for that.
                runner = next(iter(bridge.services.calls))
                await client.wait_for(
                    lambda: not runner.call.playout.active and client.arrivals, "the playout"
                )
                got_s = len(client.audio) / (rate * 2)
                assert abs(got_s - greeting_s) < 0.1, (got_s, greeting_s)
                assert "echo agent" in client.named("AIResponseEnd")[0]["finalText"]
                await client.close()
        finally:
            await agent.close()

    asyncio.run(main())


async def _status(url: str, **headers: str) -> int:
    try:
        async with connect(url, additional_headers=headers, open_timeout=PATIENCE_S):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_refusals_open_no_session():
    """Foreign origin, missing or wrong token, bad rate, root path off: refused, no call."""

    async def main():
        agent = await serve_local_agent(seed=5)
        try:
            settings = Settings(
                agents=QUIET,
                softphone_token="s3cret",
                softphone_allowed_origins=("https://app.example",),
                ws_voice_at_root=False,
            )
            async with running_bridge(settings, model_url=agent.url) as bridge:
                url = ws_url(bridge.base_url)
                assert await _status(url) == 403
                assert await _status(url + "?token=wrong") == 403
                assert await _status(url + "?token=s3cret", Origin="https://evil.example") == 403
                assert await _status(url + "?token=s3cret&rate=11025") == 400
                assert await _status(ws_url(bridge.base_url, "/", token="s3cret")) == 403
                assert len(agent.sessions) == 0
                assert bridge.services.metrics.calls_started == 0
                # The right token, in the URL or as a bearer header, from an allowed page.
                ok = await _status(url + "?token=s3cret", Origin="https://app.example")
                assert ok == 101
                assert await _status(url, Authorization="Bearer s3cret") == 101
            # With a real key, no token configured: nobody gets in.
            keyed = Settings(agents=QUIET, openai_api_key="sk-test")
            async with running_bridge(keyed, model_url=agent.url) as bridge:
                assert await _status(ws_url(bridge.base_url)) == 403
                assert bridge.services.metrics.calls_started == 0
        finally:
            await agent.close()

    asyncio.run(main())


def test_bad_input_gets_errors_and_a_flood_a_clean_close():
    rate = 16000

    async def main():
        agent = await serve_local_agent(seed=6)
        try:
            async with running_bridge(Settings(agents=QUIET), model_url=agent.url) as bridge:
                bystander = await VoiceClient.open(ws_url(bridge.base_url), rate=rate)
                client = await VoiceClient.open(ws_url(bridge.base_url), rate=rate)
                await bystander.wait_for(lambda: bystander.named("AIConnected"), "AIConnected")
                await client.wait_for(lambda: client.named("AIConnected"), "AIConnected")
                await client.ws.send('{"type": "hello"}')
                await client.ws.send(b"\x01\x02\x03")
                await client.ws.send(b"")
                await client.ws.send(bytes(bridge.services.settings.max_message_bytes + 2))
                await client.wait_for(lambda: len(client.of("error")) >= 4, "four errors")
                messages = [e["message"] for e in client.of("error")]
                assert "binary" in messages[0] and "2-byte" in messages[1], messages
                assert "over" in messages[3], messages
                # Still a working session: speech is still heard.
                await client.send_audio(caller_speech(rate)[: rate * 2])
                await client.wait_for(lambda: client.named("AISpeechDetected"), "speech")

                for _ in range(100):  # a flood of junk
                    try:
                        await client.ws.send("junk")
                    except ConnectionClosed:
                        break
                await asyncio.wait_for(client.closed.wait(), PATIENCE_S)
                assert client.ws.close_code == 1008
                assert client.ws.close_reason == "too many bad frames"

                # The other session never noticed.
                assert not bystander.closed.is_set() and bystander.of("error") == []
                await bystander.send_audio(caller_speech(rate))
                await bystander.wait_for(lambda: bystander.named("AIResponseStart"), "a reply")
                await bystander.close()
                await _no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())


async def _no_calls(bridge) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while bridge.services.calls:
        if time.monotonic() > deadline:
            pytest.fail("calls still live")
        await asyncio.sleep(0.02)


def test_a_silent_client_is_ended():
    async def main():
        agent = await serve_local_agent(seed=10)
        try:
            settings = Settings(agents=QUIET, softphone_idle_timeout_s=1.0)
            async with running_bridge(settings, model_url=agent.url) as bridge:
                client = await VoiceClient.open(ws_url(bridge.base_url))
                await client.wait_for(lambda: client.named("AIConnected"), "AIConnected")
                await asyncio.wait_for(client.closed.wait(), PATIENCE_S)
                assert client.ws.close_code == 1000
                assert client.ws.close_reason == "no audio for 1 s"
                await _no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())
