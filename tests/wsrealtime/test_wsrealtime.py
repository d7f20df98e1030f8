"""``/ws/realtime`` end to end: the real server, the local agent's REST and Realtime
endpoints, and a ``websockets`` client written from the protocol description."""

import asyncio
import base64
import contextlib
import io
import json
import time
import wave
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.wsvoice.helpers import PATIENCE_S, ws_url


async def ask(ws: ClientConnection, request: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """Send a request; the first reply that is not a ``status``."""
    await ws.send(request if isinstance(request, str | bytes) else json.dumps(request))
    while True:
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
        if reply["type"] != "status":
            return reply


async def first_event(url: str, secret: str) -> tuple[dict[str, Any], int | None]:
    """Open a Realtime session with ``secret``; its first event, and the close code if it
    was closed straight after."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with connect(url + "?model=gpt-realtime", additional_headers=headers) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
        if event["type"] == "error":
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), PATIENCE_S)
            return event, ws.close_code
        return event, None


def test_minted_secret_opens_a_session_until_it_expires():
    async def main():
        agent = await serve_local_agent(seed=7)
        try:
            settings = Settings(openai_base_url=agent.api_url)
            async with (
                running_bridge(settings, model_url=agent.url) as bridge,
                connect(ws_url(bridge.base_url, "/ws/realtime")) as ws,
            ):
                hello = json.loads(await ws.recv())
                assert hello == {"type": "status", "state": "connected", "agent": "default"}
                reply = await ask(ws, {"type": "realtime_session_request", "expiresIn": 10})
                assert reply["type"] == "realtime_session_response", reply
                secret = reply["clientSecret"]
                assert secret.startswith("ek_")
                assert reply["expiresAt"] >= int(time.time()) + 9
                # The agent's own configuration: its voice and instructions.
                session = reply["session"]
                assert session["audio"]["output"]["voice"] == "marin"
                assert "friendly" in session["instructions"]
                assert reply["realtimeUrl"] == agent.url

                event, _ = await first_event(agent.url, secret)
                assert event["type"] == "session.created"
                # As a browser does it: no headers, the key in a subprotocol.
                offered = [
                    Subprotocol("realtime"),
                    Subprotocol(f"openai-insecure-api-key.{secret}"),
                ]
                async with connect(agent.url + "?model=gpt-realtime", subprotocols=offered) as rws:
                    assert rws.subprotocol == "realtime"
                    event = json.loads(await asyncio.wait_for(rws.recv(), PATIENCE_S))
                    assert event["type"] == "session.created"

                # A requested configuration is minted as asked; a wrong one is refused.
                asked = {"instructions": "Be brief.", "audio": {"output": {"voice": "alloy"}}}
                reply = await ask(ws, {"type": "realtime_session_request", "session": asked})
                assert reply["session"]["audio"]["output"]["voice"] == "alloy"
                assert reply["session"]["instructions"] == "Be brief."
                bad = {"audio": {"output": {"voice": "nobody"}}}
                reply = await ask(ws, {"type": "realtime_session_request", "session": bad})
                assert reply["type"] == "error" and "nobody" in reply["message"], reply

                # Past its expiry (the agent's clock moved on) the secret opens nothing.
                agent.secrets.clock = lambda: time.time() + 11
                event, code = await first_event(agent.url, secret)
                assert event["error"]["code"] == "invalid_api_key", event
                assert "expired" in event["error"]["message"]
                assert code == 3000
                event, code = await first_event(agent.url, "ek_made_up")
                assert event["error"]["code"] == "invalid_api_key" and code == 3000
        finally:
            await agent.close()

    asyncio.run(main())


def tone_bursts(pcm: np.ndarray, rate: int) -> int:
    """How many separate tone bursts (10 ms frames above a threshold, in runs)."""
    frame = rate // 100
    energy = np.sqrt(np.mean(pcm[: pcm.size // frame * frame].reshape(-1, frame) ** 2.0, 1))
    loud = energy > 1000
    return int(np.count_nonzero(loud[1:] & ~loud[:-1]) + int(loud[0]))


def test_speech_bad_input_and_limits():
    async def main():
        agent = await serve_local_agent(seed=8)
        try:
            settings = Settings(openai_base_url=agent.api_url)
            async with running_bridge(settings, model_url=agent.url) as bridge:
                url = ws_url(bridge.base_url, "/ws/realtime")
                async with connect(url) as ws, connect(url) as bystander:
                    await ws.recv()
                    await bystander.recv()
                    text = "Hello there. This is a short test!"
                    reply = await ask(ws, {"type": "tts_request", "text": text, "voice": "nova"})
                    assert reply["type"] == "tts_response", reply
                    assert (reply["format"], reply["sampleRate"]) == ("wav", 24000)
                    with wave.open(io.BytesIO(base64.b64decode(reply["audio"]))) as w:
                        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (
                            24000,
                            1,
                            2,
                        )
                        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
                    # The local rendering: one tone burst per word.
                    assert tone_bursts(pcm.astype(np.float64), 24000) == len(text.split())
                    raw = await ask(ws, {"type": "tts_request", "text": "Hi.", "format": "pcm"})
                    assert raw["format"] == "pcm" and len(base64.b64decode(raw["audio"])) > 0

                    # Bad input: each gets an error, the connection stays.
                    bad_input: list[tuple[dict[str, Any] | str | bytes, str]] = [
                        ({"type": "tts_request", "text": "x" * 5000}, "limit is 4096"),
                        ({"type": "tts_request"}, "needs text"),
                        ({"type": "tts_request", "text": "hi", "voice": "zz"}, "voice"),
                        ({"type": "nonsense"}, "unknown type"),
                        ("not json", "not JSON"),
                        (b"\x00\x01", "binary"),
                        ({"type": "realtime_session_request", "expiresIn": 5}, "expiresIn"),
                    ]
                    for bad, why in bad_input:
                        reply = await ask(ws, bad)
                        assert reply["type"] == "error" and why in reply["message"], reply

                    # Rate limit: a burst of good requests is cut short.
                    replies = [
                        await ask(ws, {"type": "tts_request", "text": "Hi."}) for _ in range(6)
                    ]
                    assert any("too many requests" in r.get("message", "") for r in replies)

                    # A flood of junk closes this connection, cleanly, with a reason.
                    for _ in range(40):
                        try:
                            await ws.send("junk")
                        except ConnectionClosed:
                            break
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), PATIENCE_S)
                    except ConnectionClosed:
                        pass
                    assert ws.close_code == 1008 and ws.close_reason == "too many bad messages"
                    # The other connection never noticed.
                    reply = await ask(bystander, {"type": "tts_request", "text": "Still here."})
                    assert reply["type"] == "tts_response"
        finally:
            await agent.close()

    asyncio.run(main())


async def _status(url: str, **headers: str) -> int:
    try:
        async with connect(url, additional_headers=headers, open_timeout=PATIENCE_S):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_no_token_or_foreign_origin_mints_nothing():
    async def main():
        agent = await serve_local_agent(seed=9)
        try:
            settings = Settings(
                openai_api_key="sk-test",
                openai_base_url=agent.api_url,
                softphone_token="s3cret",
            )
            async with running_bridge(settings, model_url=agent.url) as bridge:
                url = ws_url(bridge.base_url, "/ws/realtime")
                assert await _status(url) == 403
                assert await _status(url + "?token=nope") == 403
                assert await _status(url + "?token=s3cret", Origin="https://evil.example") == 403
                assert agent.secrets.minted == 0
                async with connect(
                    url, additional_headers={"Authorization": "Bearer s3cret"}
                ) as ws:
                    await ws.recv()
                    reply = await ask(ws, {"type": "realtime_session_request"})
                    assert reply["type"] == "realtime_session_response"
                assert agent.secrets.minted == 1
            # A real key with no token configured: closed to everyone.
            open_settings = settings.with_(softphone_token=None)
            async with running_bridge(open_settings, model_url=agent.url) as bridge:
                assert await _status(ws_url(bridge.base_url, "/ws/realtime")) == 403
        finally:
            await agent.close()

    asyncio.run(main())
