"""Whole ``/chat/v1`` sessions over loopback: the real server, the local agent, python-socketio.

The local agent echoes the caller after ~0.5 s of silence. The client echoes no marks,
so what it heard is judged from its own real-time player (``ChatClient``).
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from bridge.agents import Agent
from bridge.call import playout_chunk_ms
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.chat.helpers import PATIENCE_S, ChatClient, no_calls, refusal
from tests.softphone.helpers import best_correlation, caller_speech, coarse_lag, utterance

QUIET = (Agent(greeting=""),)  # no greeting: the session starts silent


def test_echo_is_heard_and_talking_over_it_clears_it() -> None:
    rate = 16000

    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(agents=QUIET), model_url=agent.url) as bridge:
                client = ChatClient(rate)
                await client.connect(bridge.base_url, query="agentId=default")
                await client.wait_for(lambda: agent.sessions, "the model session")
                await client.send_audio(caller_speech(rate))
                listening = asyncio.create_task(client.send_audio(np.zeros(rate * 10, np.int16)))
                await client.wait_for(lambda: client.audio, "the echo")
                echo_item = client.item_ids()[0]
                assert echo_item is not None
                chunk = client.of("audio")[0]
                assert chunk["meta_info"] == {
                    "sample_rate": rate,
                    "stream_sid": "stream-1",
                    "item_id": echo_item,
                }
                await client.wait_for(lambda: client.played_ms(echo_item) >= 1500, "1.5 s played")
                listening.cancel()

                said = utterance(rate)
                barge = asyncio.create_task(client.send_audio(said[: rate * 2]))
                await client.wait_for(lambda: client.clears, "clear after the caller talked")
                barge.cancel()
                (runner,) = bridge.services.calls
                cut = runner.call.barge_ins[0]
                assert cut.item_id == echo_item and cut.trigger in ("model", "local")
                # Truncated where the client's player was when the bridge cut it, judged
                # from the release schedule alone (no marks): within a frame or two, plus
                # any time a loaded host left the player dry (the schedule cannot know).
                assert cut.audio_end_ms is not None
                played = client.played_ms(echo_item, at=cut.t)
                dry = client.gaps_ms(echo_item, at=cut.t)
                assert played - 60 <= cut.audio_end_ms <= played + dry + 60, (cut, played, dry)

                heard = np.frombuffer(bytes(client.audio[echo_item]), "<i2")
                lag = coarse_lag(said, heard)
                assert abs(lag) < rate // 2, f"echo is {lag} samples off"
                n = int(1.2 * rate)
                score = best_correlation(
                    said[max(-lag, 0) :][:n], heard[max(lag, 0) :][:n], max_lag=40
                )
                assert score > 0.9, f"echo correlation {score:.3f}"

                session = agent.sessions[0]
                await client.wait_for(lambda: session.truncates, "the truncate at the agent")
                assert [t[0] for t in session.truncates] == [echo_item]
                texts = client.of("text")
                assert any(t["role"] == "user" and t["final"] and t["data"] for t in texts)
                assert client.of("error") == []
                await client.close()
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())


def test_welcome_clear_text_reply_and_the_clients_rate() -> None:
    """The greeting plays with its text; ``clear`` stops it; text gets a spoken answer,
    at the rate of the client's latest audio (8 kHz here, on a 16 kHz session)."""

    async def main() -> None:
        async with running_bridge(Settings()) as bridge:
            client = ChatClient(8000)
            await client.connect(bridge.base_url)
            await client.wait_for(lambda: client.audio, "the welcome message")
            connected = client.of("status")[0]
            assert connected["state"] == "connected" and connected["resume"] is None
            greeting = client.item_ids()[0]
            first = client.of("audio")[0]
            assert first["meta_info"]["sample_rate"] == 16000
            size = len(base64.b64decode(first["data"]))  # whole 20 ms frames at 16 kHz, a chunk
            assert size > 0 and size % (20 * 32) == 0 and size <= playout_chunk_ms(160) * 32
            await client.wait_for(
                lambda: any(t["role"] == "assistant" and t["data"] for t in client.of("text")),
                "the welcome message's text",
            )
            await client.emit("clear")
            await client.wait_for(lambda: client.clears, "clear")

            await client.send_audio(np.zeros(800, np.int16))  # 100 ms at 8 kHz
            await client.emit("text", {"data": "What can you do?"})
            await client.wait_for(lambda: any(i != greeting for i in client.item_ids()), "a reply")
            reply = next(i for i in client.item_ids() if i != greeting)
            await client.wait_for(lambda: client.played_ms(reply) >= 500, "the reply playing")
            replies = [d for d in client.of("audio") if d["meta_info"]["item_id"] == reply]
            assert {d["meta_info"]["sample_rate"] for d in replies} == {8000}
            assert all(d["meta_info"]["stream_sid"] == "stream-1" for d in replies)
            after_clear = client.events[[k for _, k, _ in client.events].index("clear") :]
            assert all(
                d["meta_info"]["item_id"] != greeting for _, k, d in after_clear if k == "audio"
            )
            assert any(t["role"] == "assistant" and t["final"] for t in client.of("text"))
            await client.close()
            await no_calls(bridge)

    asyncio.run(main())


def test_bad_input_gets_an_error_and_spares_other_sessions() -> None:
    async def main() -> None:
        settings = Settings(agents=QUIET, max_message_bytes=8000)
        async with running_bridge(settings) as bridge:
            bystander = ChatClient()
            await bystander.connect(bridge.base_url)
            client = ChatClient()
            await client.connect(bridge.base_url)
            frame = base64.b64encode(np.zeros(320, "<i2").tobytes()).decode()
            bad = [
                ("audio", "not an object"),
                ("audio", {"data": base64.b64encode(b"\x00" * 3).decode()}),
                ("audio", {"data": frame, "meta_info": {"sample_rate": 44100}}),
                ("audio", {"data": "%%%"}),
                ("audio", {"data": base64.b64encode(b"\x00" * 9000).decode()}),
                ("dance", {}),
                ("text", {"data": ""}),
            ]
            for event, data in bad:
                await client.emit(event, data)
            await client.wait_for(lambda: len(client.of("error")) >= len(bad), "an error each")
            codes = [e["code"] for e in client.of("error")]
            assert codes == [
                "bad_message",
                "bad_audio",
                "bad_sample_rate",
                "bad_audio",
                "too_large",
                "unknown_event",
                "bad_message",
            ], codes
            assert all(e["message"] for e in client.of("error"))
            assert client.sio.connected  # dropped, not disconnected

            # A flood of garbage ends in a clean disconnect; the bystander never notices.
            for _ in range(250):
                await client.emit("audio", 7)
            await asyncio.wait_for(client.disconnected.wait(), PATIENCE_S)
            assert client.of("error")[-1]["code"] == "flood"
            await bystander.send_audio(caller_speech(16000))
            await bystander.send_audio(np.zeros(16000, np.int16))
            await bystander.wait_for(lambda: bystander.audio, "the bystander's echo")
            assert bystander.of("error") == [] and bystander.sio.connected
            await client.close()
            await bystander.close()
            await no_calls(bridge)

    asyncio.run(main())


def test_refused_connections_open_no_model_session() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        settings = Settings(softphone_token="s3cret", softphone_allowed_origins=())
        try:
            async with running_bridge(settings, model_url=agent.url) as bridge:
                url = bridge.base_url

                async def code(**kw: object) -> str:
                    refused = await refusal(url, **kw)
                    assert refused is not None, f"{kw} was accepted"
                    assert refused["message"]
                    return str(refused["data"]["code"])

                assert await code() == "unauthorized"
                assert await code(auth={"token": "guess"}) == "unauthorized"
                evil = {"Origin": "https://evil.example"}
                assert await code(auth={"token": "s3cret"}, headers=evil) == "origin_not_allowed"
                assert await code(query="token=s3cret&agentId=nobody") == "unknown_agent"
                assert await code(query="token=s3cret&sample_rate=44100") == "bad_sample_rate"
                assert await code(query="token=s3cret&resume=short") == "bad_resume"
                assert not agent.sessions and not bridge.services.calls
                # The token as a query parameter or a bearer header is accepted.
                assert await refusal(url, query="token=s3cret") is None
                bearer = {"Authorization": "Bearer s3cret"}
                assert await refusal(url, headers=bearer) is None
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())
