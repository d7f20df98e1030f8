"""The local agent over real loopback websockets, reached with the bridge's own client."""

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.agents import Agent, TurnDetection
from bridge.ai import events as rt
from bridge.ai.client import connect_realtime
from bridge.errors import SessionClosed
from bridge.local_agent import GREETING_TRANSCRIPT, serve_local_agent
from tests.ai.helpers import check_server_event, correlation, load_pcm, silence

SPEECH = load_pcm("fixtures/speech-24k.wav")
AGENT = Agent(turn_detection=TurnDetection(silence_duration_ms=500))


async def receive_until(ws: Any, kind: str, timeout: float = 30.0) -> list[tuple[float, str]]:
    """Raw frames (with arrival time) up to and including the first of type ``kind``;
    every one is checked against the openai server-event models."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            assert isinstance(message, str)
            check_server_event(message)
            frames.append((time.monotonic(), message))
            if json.loads(message)["type"] == kind:
                return frames


def test_session_update_and_echo_over_websockets() -> None:
    async def main() -> None:
        async with await serve_local_agent(seed=3) as server:
            assert server.url == f"ws://127.0.0.1:{server.port}/v1/realtime"
            ws = await connect_realtime(server.url, "gpt-realtime", None)
            (created,) = await receive_until(ws, "session.created")
            assert json.loads(created[1])["session"]["model"] == "gpt-realtime"
            await ws.send(json.dumps(rt.session_update(AGENT)))
            await receive_until(ws, "session.updated")

            pcm = np.concatenate([silence(1000), SPEECH[: 24000 * 3], silence(1500)])
            # Faster than real time, in the bridge's 20 ms frames: the VAD runs on the
            # audio's own timeline, not on the wall clock.
            for i in range(0, pcm.size, 480):
                await ws.send(json.dumps(rt.input_audio_append(pcm[i : i + 480].tobytes())))
            frames = await receive_until(ws, "response.done")
            parsed = [rt.parse_server_event(m) for _, m in frames]

            started = next(e for e in parsed if isinstance(e, rt.SpeechStarted))
            stopped = next(e for e in parsed if isinstance(e, rt.SpeechStopped))
            item = next(e for e in parsed if isinstance(e, rt.OutputItemAdded)).item_id
            deltas = [
                (t, e)
                for (t, _), e in zip(frames, parsed, strict=True)
                if isinstance(e, rt.AudioDelta)
            ]
            echo = b"".join(e.audio for _, e in deltas)
            expected = pcm[stopped.audio_end_ms * 24 - len(echo) // 2 : stopped.audio_end_ms * 24]
            assert stopped.audio_end_ms - started.audio_start_ms == len(echo) // 48
            assert correlation(echo, expected) > 0.999
            assert all(e.item_id == item and e.content_index == 0 for _, e in deltas)
            assert len({len(e.audio) for _, e in deltas}) > 3
            # Streamed faster than real time, yet not all at once.
            span = deltas[-1][0] - deltas[0][0]
            assert 0.05 < span < len(echo) / 48000 / 2
            done = parsed[-1]
            assert isinstance(done, rt.ResponseDone) and done.status == "completed"

            (session,) = server.sessions
            assert session.audio_sent_ms[item] == pytest.approx(len(echo) / 48)
            assert bytes(session.responses[item]) == echo
            assert session.errors == []
            await ws.close()

    asyncio.run(main())


def test_greeting_cancel_truncate_and_errors_over_websockets() -> None:
    async def main() -> None:
        async with await serve_local_agent(speedup=1.0) as server:
            ws = await connect_realtime(server.url, "gpt-realtime", "sk-anything")
            await receive_until(ws, "session.created")
            await ws.send(json.dumps(rt.response_create()))
            frames = await receive_until(ws, "response.output_audio.delta")
            item = next(
                json.loads(m)["item_id"]
                for _, m in frames
                if json.loads(m)["type"] == "response.output_audio.delta"
            )
            # The 4.3 s greeting streams in real time here: cancel once more of it came.
            await receive_until(ws, "response.output_audio.delta")
            await ws.send(json.dumps(rt.response_cancel()))
            frames = await receive_until(ws, "response.done")
            assert json.loads(frames[-1][1])["response"]["status"] == "cancelled"
            (session,) = server.sessions
            sent = session.audio_sent_ms[item]
            assert 0 < sent < 4000  # cancelled part-way

            await ws.send(json.dumps(rt.item_truncate(item, 0, int(sent) + 50)))
            error = rt.parse_server_event((await receive_until(ws, "error"))[-1][1])
            assert isinstance(error, rt.ServerError) and error.param == "audio_end_ms"
            await ws.send(json.dumps(rt.item_truncate(item, 0, int(sent))))
            await receive_until(ws, "conversation.item.truncated")
            assert session.truncates == [(item, 0, int(sent))]

            await ws.send(b"\x00\x01")  # binary frames are refused, the socket stays open
            error = rt.parse_server_event((await receive_until(ws, "error"))[-1][1])
            assert isinstance(error, rt.ServerError) and error.code == "invalid_event"
            await ws.send(json.dumps({"type": "response.audio.delta", "event_id": "event_b"}))
            error = rt.parse_server_event((await receive_until(ws, "error"))[-1][1])
            assert isinstance(error, rt.ServerError)
            assert (error.code, error.event_id) == ("invalid_value", "event_b")

            await ws.send(json.dumps(rt.response_create()))
            frames = await receive_until(ws, "response.output_audio_transcript.delta")
            assert GREETING_TRANSCRIPT.startswith(json.loads(frames[-1][1])["delta"])
            assert len(session.errors) == 3
            await ws.close()

    asyncio.run(main())


def test_session_is_closed_at_its_maximum_duration() -> None:
    async def main() -> None:
        async with await serve_local_agent(max_duration_s=0.5) as server:
            ws = await connect_realtime(server.url, "gpt-realtime", None)
            frames = await receive_until(ws, "error")
            error = rt.parse_server_event(frames[-1][1])
            assert isinstance(error, rt.ServerError) and error.code == "session_expired"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001
            assert "maximum duration" in info.value.rcvd.reason

    asyncio.run(main())


@pytest.mark.parametrize(
    ("query", "headers", "code", "close_code"),
    [
        ("?model=gpt-realtime", {}, None, 3000),
        ("?model=gpt-realtime", {"Authorization": "Basic abc"}, None, 3000),
        ("", {"Authorization": "Bearer x"}, "missing_model", 4000),
        (
            "?model=gpt-realtime",
            {"Authorization": "Bearer x", "OpenAI-Beta": "realtime=v1"},
            "beta_api_shape_disabled",
            4000,
        ),
    ],
)
def test_handshakes_the_service_refuses(
    query: str, headers: dict[str, str], code: str | None, close_code: int
) -> None:
    async def main() -> None:
        async with await serve_local_agent() as server:
            async with connect(server.url + query, additional_headers=headers) as ws:
                event = json.loads(await ws.recv())
                check_server_event(event)
                assert event["type"] == "error" and event["error"]["code"] == code
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == close_code
            assert not server.sessions

    asyncio.run(main())


def test_wrong_path_and_closed_port_fail_cleanly() -> None:
    async def main() -> None:
        server = await serve_local_agent()
        with pytest.raises(SessionClosed):
            await connect_realtime(server.url.replace("/v1/realtime", "/v1/other"), "m", None)
        port_url = server.url
        await server.close()
        with pytest.raises(SessionClosed):
            await connect_realtime(port_url, "gpt-realtime", None, open_timeout=2)

    asyncio.run(main())


def test_sessions_are_independent() -> None:
    async def main() -> None:
        async with await serve_local_agent(seed=1, speedup=20.0) as server:
            sockets = [await connect_realtime(server.url, "gpt-realtime", None) for _ in range(3)]
            ids = set()
            for ws in sockets:
                (frame,) = await receive_until(ws, "session.created")
                ids.add(json.loads(frame[1])["session"]["id"])
            assert len(ids) == len(server.sessions) == 3
            await sockets[0].send(json.dumps(rt.response_create()))
            await receive_until(sockets[0], "response.done")
            assert len(server.sessions[0].responses) == 1
            assert not server.sessions[1].responses and not server.sessions[2].responses
            for ws in sockets:
                await ws.close()

    asyncio.run(main())
