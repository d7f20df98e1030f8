"""simulate_call against a tiny fake bridge on a real loopback socket.

The fake bridge checks what the simulator sends is Twilio's wire format (signed webhook,
signed handshake, connected/start/media/stop with string numbers), plays a burst of
audio with marks, clears it mid-way, then echoes the caller's audio back.
"""

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from bridge.sim.caller import format_timeline, simulate_call
from bridge.sim.errors import StreamRejected, WebhookRejected
from bridge.sim.ulaw import ulaw_encode
from bridge.sim.wav import write_wav

PUBLIC_URL = "https://bridge.example.test"
STREAM_URL = "wss://bridge.example.test/twilio/media"
TOKEN = "test-auth-token"
BURST_CHUNKS = 10  # item A: 10 chunks of 100 ms, a mark after each
CLEAR_AFTER_FRAMES = 25  # clear once 0.5 s of caller audio has arrived


def caller_audio() -> np.ndarray:
    """0.2 s silence, 1.0 s of loud noise (sharp correlation peak), 0.3 s silence."""
    rng = np.random.default_rng(3)
    noise = np.clip(rng.normal(0, 6000, 8000), -32000, 32000).astype(np.int16)
    return np.concatenate([np.zeros(1600, np.int16), noise, np.zeros(2400, np.int16)])


def tone(ms: int) -> bytes:
    t = np.arange(ms * 8) / 8000
    return ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))


class FakeBridge:
    def __init__(self, mode: str, *, check_webhook: bool = True) -> None:
        self.mode = mode
        self.check_webhook = check_webhook
        self.messages: list[dict[str, Any]] = []
        self.mark_echoes: list[str] = []
        self.clear_sent_after_frames: int | None = None
        self.send_errors: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                WebSocketRoute("/twilio/media", self.media),
            ]
        )

    async def voice(self, request: Request) -> Response:
        # Parsed by hand: starlette's request.form() needs python-multipart, not installed.
        body = (await request.body()).decode()
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        params = dict(parse_qsl(body, keep_blank_values=True))
        signature = request.headers.get("x-twilio-signature", "")
        valid = RequestValidator(TOKEN).validate(PUBLIC_URL + "/twilio/voice", params, signature)
        if self.check_webhook and not valid:
            return Response("bad signature", status_code=403)
        assert params["Direction"] == "inbound" and params["CallStatus"] == "ringing"
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="{STREAM_URL}">'
            f'<Parameter name="token" value="tok-{params["CallSid"]}"/>'
            '<Parameter name="agent" value="echo"/>'
            "</Stream></Connect></Response>"
        )
        return Response(twiml, media_type="text/xml")

    async def media(self, ws: WebSocket) -> None:
        signature = ws.headers.get("x-twilio-signature", "")
        if not RequestValidator(TOKEN).validate(STREAM_URL, {}, signature):
            await ws.close(code=1008)  # before accept: the handshake is refused with 403
            return
        await ws.accept()
        sid = ""
        frames: list[bytes] = []
        echoed = 0
        echoing = False
        seq = 0

        async def send(message: dict[str, Any]) -> None:
            try:
                await ws.send_text(json.dumps({**message, "streamSid": sid}))
            except Exception as exc:  # the caller hung up: keep reading what it sent
                self.send_errors.append(repr(exc))

        try:
            while True:
                # ws.receive(), not receive_text(): after a send fails because the caller
                # closed, starlette refuses receive_text() but the stop is still queued.
                frame = await ws.receive()
                if frame["type"] == "websocket.disconnect":
                    return
                message = json.loads(frame["text"])
                self.messages.append(message)
                match message["event"]:
                    case "start":
                        sid = message["streamSid"]
                        if self.mode == "rude":
                            await ws.send_bytes(b"\xff" * 160)
                            await ws.send_text(
                                json.dumps({"event": "clear", "streamSid": "MZ" + "9" * 32})
                            )
                            await send({"event": "mark", "mark": {"name": "1:x"}, "extra": 1})
                            await send({"event": "mark", "mark": {"name": "2:x"}})
                    case "media":
                        frames.append(base64.b64decode(message["media"]["payload"]))
                        if self.mode == "rude":
                            if len(frames) == 10:
                                await ws.close(code=1000)
                                return
                            continue
                        if len(frames) == 1:
                            burst = tone(100 * BURST_CHUNKS)
                            for i in range(BURST_CHUNKS):
                                chunk = burst[i * 800 : (i + 1) * 800]
                                await send({"event": "media", "media": {"payload": b64(chunk)}})
                                seq += 1
                                await send({"event": "mark", "mark": {"name": f"{seq}:itemA"}})
                        if len(frames) == CLEAR_AFTER_FRAMES:
                            await send({"event": "clear"})
                            self.clear_sent_after_frames = len(frames)
                            echoed = len(frames)  # echo every frame from here on
                        # Start echoing with 3 frames at once: 60 ms buffered at the far end
                        # rides out event-loop jitter.
                        if self.clear_sent_after_frames and len(frames) - echoed >= 3:
                            echoing = True
                        while echoing and echoed < len(frames):
                            payload = b64(frames[echoed])
                            await send({"event": "media", "media": {"payload": payload}})
                            echoed += 1
                            if echoed % 5 == 0:
                                seq += 1
                                await send({"event": "mark", "mark": {"name": f"{seq}:itemB"}})
                    case "mark":
                        self.mark_echoes.append(message["mark"]["name"])
                    case "stop":
                        return
        except WebSocketDisconnect:
            return


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections and a small
    # message written right after another waits for the caller's next frame (~20 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", ws="websockets-sansio", lifespan="off", ws_ping_interval=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def test_call_against_fake_bridge() -> None:
    bridge = FakeBridge("echo")
    audio = caller_audio()

    async def main() -> Any:
        async with serving(bridge.app) as base_url:
            return await simulate_call(
                base_url, audio, public_url=PUBLIC_URL, auth_token=TOKEN, tail_s=0.5
            )

    result = asyncio.run(main())
    print(format_timeline(result))
    assert result.violations == []
    assert result.closed_by == "caller"
    assert result.custom_parameters == {"token": f"tok-{result.call_sid}", "agent": "echo"}

    # What the simulator sent is Twilio's wire format.
    first, start, *rest = bridge.messages
    assert first == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1"
    assert start["streamSid"] == result.stream_sid == start["start"]["streamSid"]
    assert start["start"]["callSid"] == result.call_sid
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["customParameters"] == result.custom_parameters
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    numbers = [int(m["sequenceNumber"]) for m in rest]
    assert numbers == list(range(2, 2 + len(rest)))
    media = [m for m in rest if m["event"] == "media"]
    assert len(media) == 100  # 1.5 s of audio + 0.5 s tail, in 20 ms frames
    assert [m["media"]["chunk"] for m in media] == [str(i + 1) for i in range(100)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * i) for i in range(100)]
    assert all(m["media"]["track"] == "inbound" for m in media)
    assert rest[-1] == {
        "event": "stop",
        "sequenceNumber": str(numbers[-1]),
        "streamSid": result.stream_sid,
        "stop": {"accountSid": result.account_sid, "callSid": result.call_sid},
    }
    for m in rest:
        if m["event"] == "mark":
            assert set(m) == {"event", "sequenceNumber", "streamSid", "mark"}

    # Every mark came back, in order; item A's tail was echoed at the clear, not played.
    item_a = [f"{i}:itemA" for i in range(1, BURST_CHUNKS + 1)]
    assert bridge.mark_echoes[:BURST_CHUNKS] == item_a
    assert [e.name for e in result.marks] == bridge.mark_echoes
    assert any(name.endswith(":itemB") for name in bridge.mark_echoes)
    (clear,) = result.clears
    assert clear.item_id == "itemA"
    played_marks = [e.name for e in result.marks if e.name.endswith("itemA") and not e.cleared]
    cleared_marks = [e.name for e in result.marks if e.cleared]
    assert played_marks + cleared_marks == item_a
    # Played marks come back when their 100 ms chunk has played, at the real-time pace
    # (on average: a loaded machine delays single echoes).
    times = [e.t for e in result.marks if e.name in played_marks]
    assert (times[-1] - times[0]) / (len(times) - 1) == pytest.approx(0.1, abs=0.02)
    # The clear came after 25 caller frames (~0.5 s); item A started ~20 ms in.
    assert 400 <= clear.played_ms <= 560
    assert len(played_marks) == int(clear.played_ms // 100)
    assert clear.played_ms + clear.dropped_ms == pytest.approx(100 * BURST_CHUNKS)
    assert result.played_ms["itemA"] == clear.played_ms
    assert abs(clear.t - clear.played_ms / 1000) < 0.1

    # After the clear the caller hears its own audio back, a little later.
    assert len(result.sent) == 16000
    assert abs(len(result.heard) - len(result.sent)) < 1600  # hang-up within 0.2 s of the end
    lag, corr = best_lag(result.sent, result.heard, start=8000, stop=9600)
    assert corr > 0.95
    assert 0.02 <= lag / 8000 <= 0.2

    kinds = [e.kind for e in result.timeline]
    for kind in (
        "twiml",
        "connected",
        "caller_speech_start",
        "caller_speech_end",
        "agent_audio_start",
        "clear",
        "mark_echo",
        "stop",
        "closed",
    ):
        assert kind in kinds, kind
    (speech_start,) = result.events("caller_speech_start")
    assert speech_start.t == pytest.approx(0.2, abs=0.021)
    assert result.events("twiml")[0].t < 0 == result.events("connected")[0].t


def best_lag(sent: np.ndarray, heard: np.ndarray, *, start: int, stop: int) -> tuple[int, float]:
    """Lag (samples) at which heard[start+lag: stop+lag] best matches sent[start:stop]."""
    ref = sent[start:stop].astype(np.float64)
    best = (0, -1.0)
    for lag in range(0, 2000):
        seg = heard[start + lag : stop + lag].astype(np.float64)
        if len(seg) < len(ref):
            break
        corr = float(np.dot(ref, seg) / (np.linalg.norm(ref) * np.linalg.norm(seg) + 1e-9))
        if corr > best[1]:
            best = (lag, corr)
    return best


def test_bridge_hangup_and_violations_are_recorded() -> None:
    bridge = FakeBridge("rude")

    async def main() -> Any:
        async with serving(bridge.app) as base_url:
            return await simulate_call(
                base_url, caller_audio(), public_url=PUBLIC_URL, auth_token=TOKEN
            )

    result = asyncio.run(main())
    assert result.closed_by == "bridge"
    assert result.close_code == 1000
    assert len(result.sent) < 8000  # the call ended when the bridge closed, not after 3.5 s
    assert [v.split(" ", 1)[1][:5] for v in result.violations] == ["31950", "31951", "31951"]
    assert "not this stream's" in result.violations[1]
    assert "unexpected ['extra']" in result.violations[2]
    assert [e.name for e in result.marks] == ["2:x"]  # the valid mark, echoed at once
    assert not any(m["event"] == "stop" for m in bridge.messages)


def test_wrong_signature_is_refused_at_the_webhook() -> None:
    bridge = FakeBridge("echo")

    async def main() -> None:
        async with serving(bridge.app) as base_url:
            await simulate_call(base_url, caller_audio(), public_url=PUBLIC_URL, auth_token="nope")

    with pytest.raises(WebhookRejected) as caught:
        asyncio.run(main())
    assert caught.value.status_code == 403
    assert bridge.messages == []


def test_unsigned_handshake_is_refused() -> None:
    bridge = FakeBridge("echo", check_webhook=False)

    async def main() -> None:
        async with serving(bridge.app) as base_url:
            await simulate_call(base_url, caller_audio(), public_url=PUBLIC_URL, auth_token=None)

    with pytest.raises(StreamRejected) as caught:
        asyncio.run(main())
    assert caught.value.status_code == 403
    assert bridge.messages == []


def test_hangup_after_reads_a_wav_and_reports_events_live(tmp_path: Path) -> None:
    bridge = FakeBridge("echo")
    wav = tmp_path / "caller.wav"
    write_wav(wav, caller_audio(), 8000)
    seen: list[str] = []

    async def main() -> Any:
        async with serving(bridge.app) as base_url:
            return await simulate_call(
                base_url,
                wav,
                public_url=PUBLIC_URL,
                auth_token=TOKEN,
                hangup_after_s=0.3,
                on_event=lambda event: seen.append(event.kind),
            )

    result = asyncio.run(main())
    assert len(result.sent) == 2400  # 15 frames, then the caller hung up
    assert np.array_equal(result.sent[:1600], np.zeros(1600, np.int16))
    assert result.closed_by == "caller"
    assert bridge.messages[-1]["event"] == "stop"
    assert seen[:2] == ["twiml", "connected"]
    assert seen[-2:] == ["stop", "closed"]
    assert [e.kind for e in result.timeline if e.kind != "mark_echo"] == [
        k for k in seen if k != "mark_echo"
    ]
