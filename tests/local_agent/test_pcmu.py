"""G.711 μ-law (``audio/pcmu``) sessions of the local agent, over real loopback websockets.

Every server frame is checked against the openai package's models (``receive_until``), and
every client event this file builds against its client-event models.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
from pesq import pesq

from bridge.ai.client import connect_realtime
from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.resample import resample_offline
from bridge.audio.wav import read_wav
from bridge.local_agent import serve_local_agent
from bridge.local_agent.response import load_greeting
from tests.ai.helpers import ROOT, check_client_event, correlation
from tests.local_agent.test_server import receive_until

PCM = {"type": "audio/pcm", "rate": 24000}
PCMU = {"type": "audio/pcmu"}
_HELLO, _RATE = read_wav(ROOT / "fixtures/caller-hello.wav")
assert _RATE == 8000
# The caller's "hello" (speech from 4.51 s to 8.96 s) with silence either side, as sent.
CALLER = ulaw_encode(_HELLO[4000 * 8 : 10500 * 8])
FRAME = 160  # 20 ms of μ-law, as Twilio sends it


def event(kind: str, **fields: Any) -> str:
    message = {"type": kind, "event_id": f"event_{kind.replace('.', '_')}", **fields}
    check_client_event(message)
    return json.dumps(message)


def session_update(
    *, input_format: dict[str, Any] | None = None, output_format: dict[str, Any] | None = None
) -> str:
    audio: dict[str, Any] = {
        "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
        "output": {},
    }
    if input_format is not None:
        audio["input"]["format"] = input_format
    if output_format is not None:
        audio["output"]["format"] = output_format
    return event("session.update", session={"type": "realtime", "audio": audio})


def append(audio: bytes) -> str:
    return event("input_audio_buffer.append", audio=base64.b64encode(audio).decode())


def truncate(item_id: str, audio_end_ms: int) -> str:
    return event(
        "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=audio_end_ms
    )


async def events_until(ws: Any, kind: str) -> list[dict[str, Any]]:
    return [json.loads(frame) for _, frame in await receive_until(ws, kind)]


def first(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


def audio_of(events: list[dict[str, Any]]) -> bytes:
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert deltas and all(e["delta"] for e in deltas)
    return b"".join(base64.b64decode(e["delta"]) for e in deltas)


async def speak(ws: Any, audio: bytes, frame: int) -> list[dict[str, Any]]:
    """Append ``audio`` in frames (faster than real time: the VAD runs on the audio's own
    timeline) and collect everything up to the echo's ``response.done``."""
    for i in range(0, len(audio), frame):
        await ws.send(append(audio[i : i + frame]))
    return await events_until(ws, "response.done")


def test_pcmu_both_ways_echoes_in_time_in_quality_and_truncates_in_ulaw_ms() -> None:
    async def main() -> None:
        async with await serve_local_agent(seed=5, speedup=20.0) as server:
            ws = await connect_realtime(server.url, "gpt-realtime", None)
            await receive_until(ws, "session.created")
            await ws.send(session_update(input_format=PCMU, output_format=PCMU))
            updated = (await events_until(ws, "session.updated"))[-1]["session"]["audio"]
            assert updated["input"]["format"] == PCMU == updated["output"]["format"]

            events = await speak(ws, CALLER, FRAME)
            started = first(events, "input_audio_buffer.speech_started")
            stopped = first(events, "input_audio_buffer.speech_stopped")
            assert first(events, "response.done")["response"]["status"] == "completed"
            assert first(events, "response.created")["response"]["audio"]["output"]["format"] == (
                PCMU
            )
            echo = audio_of(events)
            item = first(events, "response.output_item.added")["item"]["id"]

            # The same call as PCM16 24 kHz (upsampled offline): the VAD must place the turn
            # at the same milliseconds, up to one of its 10 ms frames.
            pcm = await connect_realtime(server.url, "gpt-realtime", None)
            await receive_until(pcm, "session.created")
            await pcm.send(session_update())
            await receive_until(pcm, "session.updated")
            reference = resample_offline(ulaw_decode(CALLER), 8000, 24000)
            pcm_events = await speak(pcm, reference.astype("<i2").tobytes(), 960)
            for kind, key in (
                ("input_audio_buffer.speech_started", "audio_start_ms"),
                ("input_audio_buffer.speech_stopped", "audio_end_ms"),
            ):
                ours = first(events, kind)[key]
                assert abs(ours - first(pcm_events, kind)[key]) <= 10, kind
            # Speech runs from 510 ms to 4960 ms of what was sent: the turn is that, with
            # the 300 ms prefix padding before and the 500 ms of silence after.
            assert abs(started["audio_start_ms"] - 210) <= 30
            assert abs(stopped["audio_end_ms"] - 5460) <= 50

            # One μ-law byte per 8 kHz sample, exactly the turn's span...
            span_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
            assert len(echo) == span_ms * 8
            # ...and sounding like what the caller said, as the caller sent it.
            said = ulaw_decode(CALLER)[started["audio_start_ms"] * 8 : stopped["audio_end_ms"] * 8]
            heard = ulaw_decode(echo)

            assert correlation(heard, said) > 0.99
            assert pesq(8000, said, heard, "nb") >= 4.0

            (session, _) = server.sessions
            assert session.audio_sent_ms[item] == span_ms
            assert bytes(session.responses[item]) == echo

            # Truncation counts μ-law milliseconds: the whole item may be kept, not a
            # millisecond more (counted as PCM16 bytes it would be six times shorter).
            await ws.send(truncate(item, span_ms + 1))
            error = (await events_until(ws, "error"))[-1]["error"]
            assert (error["code"], error["param"]) == ("invalid_value", "audio_end_ms")
            assert error["message"] == (
                f"Audio content of {span_ms}ms is already shorter than {span_ms + 1}ms"
            )
            await ws.send(truncate(item, span_ms))
            truncated = (await events_until(ws, "conversation.item.truncated"))[-1]
            assert truncated["audio_end_ms"] == span_ms
            assert session.truncates == [(item, 0, span_ms)]
            assert len(session.errors) == 1
            await ws.close()
            await pcm.close()

    asyncio.run(main())


def test_formats_are_independent_and_a_change_applies_to_the_next_response() -> None:
    async def main() -> None:
        greeting = np.frombuffer(load_greeting(), dtype="<i2")
        async with await serve_local_agent(seed=6, speedup=50.0) as server:
            ws = await connect_realtime(server.url, "gpt-realtime", None)
            await receive_until(ws, "session.created")
            await ws.send(session_update(output_format=PCMU))
            updated = (await events_until(ws, "session.updated"))[-1]["session"]["audio"]
            assert (updated["input"]["format"], updated["output"]["format"]) == (PCM, PCMU)

            await ws.send(event("response.create"))
            ulaw = audio_of(await events_until(ws, "response.done"))
            # The agent's 24 kHz greeting, downsampled offline by soxr: the same sound.
            expected = resample_offline(greeting, 24000, 8000)
            assert len(ulaw) == -(-greeting.size // 3)

            assert correlation(ulaw_decode(ulaw), expected) > 0.99

            # Back to PCM16 output: the next response speaks it.
            await ws.send(session_update(output_format={"type": "audio/pcm"}))
            updated = (await events_until(ws, "session.updated"))[-1]["session"]["audio"]
            assert updated["output"]["format"] == PCM
            await ws.send(event("response.create"))
            assert audio_of(await events_until(ws, "response.done")) == greeting.tobytes()
            (session,) = server.sessions
            assert session.errors == []
            await ws.close()

    asyncio.run(main())


def test_manual_commits_count_every_ulaw_millisecond_across_a_format_switch() -> None:
    async def main() -> None:
        async with await serve_local_agent(seed=7) as server:
            ws = await connect_realtime(server.url, "gpt-realtime", None)
            await receive_until(ws, "session.created")
            await ws.send(
                event(
                    "session.update",
                    session={
                        "type": "realtime",
                        "audio": {
                            "input": {
                                "format": PCMU,
                                "turn_detection": None,
                                "transcription": {"model": "gpt-4o-mini-transcribe"},
                            }
                        },
                    },
                )
            )
            await receive_until(ws, "session.updated")
            # Exactly 100 ms of μ-law: the least a commit takes. The resampler's held-back
            # tail must be in the buffer by then, or this would be 97 ms and refused.
            tone = (8000 * np.sin(np.arange(800) * 2 * np.pi * 440 / 8000)).astype(np.int16)
            await ws.send(append(ulaw_encode(tone[:333])))
            await ws.send(append(ulaw_encode(tone[333:])))
            await ws.send(event("input_audio_buffer.commit"))
            done = await events_until(ws, "conversation.item.input_audio_transcription.completed")
            assert done[-1]["usage"]["seconds"] == 0.1

            # 100 ms more of μ-law, then a switch to PCM16 and 100 ms of silence in it: the
            # switch releases the μ-law tail first, so the commit holds all 200 ms, in order.
            await ws.send(append(ulaw_encode(tone)))
            audio = {"input": {"format": PCM}}
            await ws.send(event("session.update", session={"type": "realtime", "audio": audio}))
            await receive_until(ws, "session.updated")
            await ws.send(append(bytes(4800)))
            await ws.send(event("input_audio_buffer.commit"))
            done = await events_until(ws, "conversation.item.input_audio_transcription.completed")
            assert done[-1]["usage"]["seconds"] == 0.2
            # The echo (PCM16 24 kHz out) plays the committed audio back as it was heard.
            await ws.send(event("response.create"))
            echo = np.frombuffer(audio_of(await events_until(ws, "response.done")), "<i2")
            assert echo.size == 4800
            assert correlation(echo[:2400], resample_offline(tone, 8000, 24000)) > 0.99
            assert not echo[2400:].any()
            (session,) = server.sessions
            assert session.errors == []
            assert session.input_buffered_ms == 300
            await ws.close()

    asyncio.run(main())


def test_pcma_and_a_rate_for_pcmu_are_refused_and_change_nothing() -> None:
    async def main() -> None:
        async with await serve_local_agent(seed=8) as server:
            ws = await connect_realtime(server.url, "gpt-realtime", None)
            await receive_until(ws, "session.created")
            await ws.send(session_update(input_format={"type": "audio/pcma"}))
            error = (await events_until(ws, "error"))[-1]["error"]
            assert (error["code"], error["param"]) == (
                "invalid_value",
                "session.audio.input.format.type",
            )
            assert "'audio/pcma' is not supported" in error["message"]
            assert "'audio/pcmu'" in error["message"]
            # The openai models know no rate for pcmu either: a raw event, unchecked.
            rate = {"type": "audio/pcmu", "rate": 8000}
            bad = {"type": "realtime", "audio": {"output": {"format": rate}}}
            await ws.send(json.dumps({"type": "session.update", "session": bad}))
            error = (await events_until(ws, "error"))[-1]["error"]
            assert (error["code"], error["param"]) == (
                "unknown_parameter",
                "session.audio.output.format.rate",
            )
            (session,) = server.sessions
            assert session.config["audio"]["input"]["format"] == PCM
            assert session.config["audio"]["output"]["format"] == PCM
            await ws.close()

    asyncio.run(main())
