"""The raw Realtime proxy end to end: the real server, the local agent, python-socketio.

A beta client (the issue's ``session.create``) speaks binary PCM and hears the agent's
echo (correlated with what it said), barges in (the model's ``speech_started``, then the
client's truncate), types a message and hears a spoken reply; it sees beta event names
only. Over WebSocket and long-polling. Refused clients open no model session.
"""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from bridge.local_agent.response import load_greeting
from bridge.store.db import open_store
from tests.proxy.helpers import PATIENCE_S, RATE, RealtimeClient
from tests.softphone.helpers import best_correlation, caller_speech, coarse_lag, utterance

SNIPPET_SESSION = {
    "type": "session.create",
    "session": {
        "modalities": ["text", "audio"],
        "instructions": "Be brief.",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 200,
        },
    },
}


def echo_score(said: np.ndarray, heard: np.ndarray) -> float:
    lag = coarse_lag(said, heard)
    assert abs(lag) < RATE // 2, f"echo is {lag} samples off"
    aligned, ref = heard[max(lag, 0) :], said[max(-lag, 0) :]
    n = int(1.2 * RATE)
    return best_correlation(ref[:n], aligned[:n], max_lag=40)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_beta_client_hears_the_echo_barges_in_and_types(transport: str, tmp_path: Path) -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=2)
        settings = Settings(records_path=str(tmp_path / "records.db"))
        try:
            async with running_bridge(settings, model_url=agent.url) as bridge:
                client = RealtimeClient()
                await client.connect(bridge.base_url, transports=[transport])
                await client.send(SNIPPET_SESSION)
                await client.wait_for(lambda: len(client.of("session.updated")) >= 2, "updates")
                # The default agent keeps its instructions; the rest applied, in beta shape.
                assert client.errors[0]["code"] == "field_not_allowed"
                assert "instructions" in client.errors[0]["message"]
                session = client.of("session.updated")[-1]["session"]
                assert session["voice"] == "alloy"
                assert session["input_audio_format"] == "pcm16"
                assert session["modalities"] == ["text", "audio"]
                assert session["turn_detection"]["silence_duration_ms"] == 200
                assert client.of("session.created")
                assert bridge.services.metrics.active_by_leg.get("realtime_proxy") == 1

                # Speak; the echo comes back as beta audio deltas.
                said = utterance(RATE)
                await client.send_audio(caller_speech(RATE))
                await client.wait_for(lambda: client.of("response.audio.done"), "the echo")
                echo_item = client.of("response.audio.done")[0]["item_id"]
                heard = np.frombuffer(bytes(client.audio[echo_item]), "<i2")
                assert echo_score(said, heard) > 0.9
                assert client.of("response.audio_transcript.delta")
                assert client.of("conversation.item.created")
                ga_only = (
                    "response.output_audio",
                    "response.output_text",
                    "conversation.item.added",
                )
                assert not [t for t in client.types() if t.startswith(ga_only)]

                # Barge in while (as a page playing in real time would be) the echo plays.
                started = len(client.of("input_audio_buffer.speech_started"))
                talking = asyncio.create_task(client.send_audio(said[: RATE * 2]))
                await client.wait_for(
                    lambda: len(client.of("input_audio_buffer.speech_started")) > started,
                    "speech_started",
                )
                cut_at = [
                    t
                    for t, e in client.events
                    if e.get("type") == "input_audio_buffer.speech_started"
                ][-1]
                played_ms = int((cut_at - client.first_audio[echo_item]) * 1000)
                sent_ms = len(client.audio[echo_item]) // 2 * 1000 // RATE
                audio_end_ms = max(0, min(played_ms, sent_ms))
                await client.send(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": echo_item,
                        "content_index": 0,
                        "audio_end_ms": audio_end_ms,
                    }
                )
                await client.wait_for(lambda: client.of("conversation.item.truncated"), "truncated")
                await talking
                # Drop the rest of that utterance: no answer to it.
                await client.send({"type": "input_audio_buffer.clear"})
                await client.wait_for(lambda: client.of("input_audio_buffer.cleared"), "cleared")
                assert agent.sessions[0].truncates == [(echo_item, 0, audio_end_ms)]
                assert bridge.services.metrics.barge_ins["client"] == 1

                # Typed text gets a spoken reply (the local agent says its greeting).
                done = len(client.of("response.done"))
                await client.send(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "Hello there"}],
                        },
                    }
                )
                await client.wait_for(
                    lambda: client.of("conversation.item.created")[-1]["item"]["role"] == "user",
                    "the item",
                )
                await client.send({"type": "response.create"})
                await client.wait_for(
                    lambda: any(
                        e["response"]["status"] == "completed"
                        and e["response"]["output"][0]["id"] not in (echo_item,)
                        and e["response"]["output"][0]["id"] in client.audio
                        and client.audio[e["response"]["output"][0]["id"]]
                        and len(client.audio[e["response"]["output"][0]["id"]]) > 48000
                        for e in client.of("response.done")[done:]
                    ),
                    "the spoken reply",
                )
                reply = client.of("response.done")[-1]["response"]["output"][0]["id"]
                greeting = np.frombuffer(load_greeting(), "<i2")
                spoken = np.frombuffer(bytes(client.audio[reply]), "<i2")
                assert echo_score(greeting, spoken) > 0.9
                assert agent.sessions[0].errors == []

                # The model session ends (its maximum duration): the client is told, let go.
                agent.expire_now()
                await client.wait_for(
                    lambda: any(e["code"] == "model_closed" for e in client.errors), "the end"
                )
                assert client.of("error")[-1]["error"]["code"] == "session_expired"
                await client.wait_for(lambda: not client.sio.connected, "the disconnect")
                await client.close()
                writer = bridge.services.records
                assert writer is not None
                await client.wait_for(lambda: writer.stats.written == 1, "the record")
                assert bridge.services.metrics.active_by_leg["realtime_proxy"] == 0
                assert not bridge.services.proxied
            store = await open_store(str(tmp_path / "records.db"))
            try:
                [record] = await store.list_calls(leg="realtime_proxy", with_turns=True)
            finally:
                await store.close()
            assert record.agent == "default"
            assert record.answered_at is not None
            assert [b.audio_end_ms for b in record.barge_ins] == [audio_end_ms]
            assert any(t.role == "user" and t.text == "Hello there" for t in record.turns)
            assert any(t.role == "assistant" and t.truncated for t in record.turns)
        finally:
            await agent.close()

    asyncio.run(main())


def test_ga_client_passes_through_and_takes_binary_audio() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=5)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                client = RealtimeClient()
                await client.connect(bridge.base_url, auth={"audio": "binary"})
                update = {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "instructions": "Ignore your agent.",
                        "audio": {"output": {"voice": "ash"}},
                    },
                }
                await client.send(update)
                await client.wait_for(lambda: len(client.of("session.updated")) >= 2, "updates")
                assert client.errors[0]["code"] == "field_not_allowed"
                session = client.of("session.updated")[-1]["session"]
                assert session["audio"]["output"]["voice"] == "ash"  # GA shape, untranslated
                assert session["instructions"] != "Ignore your agent."
                await client.send_audio(caller_speech(RATE))
                await client.wait_for(lambda: client.of("response.output_audio.done"), "the echo")
                assert client.of("response.output_audio_transcript.delta")
                assert not client.of("response.output_audio.delta")  # audio came as binary
                heard = np.frombuffer(bytes(client.binary), "<i2")
                assert echo_score(utterance(RATE), heard) > 0.9
                await client.close()
                await client.wait_for(lambda: not bridge.services.proxied, "the session's end")
                assert bridge.services.metrics.ended_by_outcome["caller_hung_up"] == 1
        finally:
            await agent.close()

    asyncio.run(main())


def test_node_snippet_holds_a_conversation(tmp_path: Path) -> None:
    """The README's JS snippet, run by Node's socket.io-client against the bridge with
    its built-in local agent (as ``bridge serve`` without a key)."""
    script = Path(__file__).with_name("realtime_snippet.js")
    speech = tmp_path / "speech.pcm"
    speech.write_bytes(caller_speech(RATE).astype("<i2").tobytes())

    async def main() -> None:
        async with running_bridge(Settings()) as bridge:
            node = await asyncio.create_subprocess_exec(
                "node", str(script), bridge.base_url, str(speech), str(tmp_path)
            )
            assert await asyncio.wait_for(node.wait(), 3 * PATIENCE_S) == 0

    asyncio.run(main())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "conversation.item.truncated" in summary["types"]
    assert not [t for t in summary["types"] if t.startswith("response.output_audio")]
    assert [e["code"] for e in summary["errors"]] == ["field_not_allowed"]
    echo = np.frombuffer((tmp_path / "echo.pcm").read_bytes(), "<i2")
    assert echo_score(utterance(RATE), echo) > 0.9
    reply = np.frombuffer((tmp_path / "reply.pcm").read_bytes(), "<i2")
    assert echo_score(np.frombuffer(load_greeting(), "<i2"), reply) > 0.9
