"""Whole softphone calls over loopback: the real server, the local agent, python-socketio.

Each test runs ``running_bridge`` (uvicorn on a real socket) and drives it like the page
does (``FakeBrowser``). The local agent echoes the caller after ~0.5 s of silence.
"""

import asyncio
import base64

import numpy as np
import socketio

from bridge.agents import Agent
from bridge.call import playout_chunk_ms
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.softphone.helpers import (
    FRAME_MS,
    PATIENCE_S,
    FakeBrowser,
    best_correlation,
    caller_speech,
    coarse_lag,
    refusal,
    utterance,
)

QUIET = (Agent(greeting=""),)  # no greeting: the call starts silent


def softphone_of(bridge):
    return bridge.app.softphone


def test_echo_barge_in_and_hang_up():
    """Speak, hear the echo (correlated with what was said), talk over it, hang up.

    Judged on what the page was sent and played, and when, not on the wall clock: a
    loaded host slows every step down but must not change the verdict.
    """
    rate = 16000

    async def main():
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(agents=QUIET), model_url=agent.url) as bridge:
                browser = FakeBrowser(rate)
                await browser.connect(bridge.base_url, auth={"agentId": "default"})
                await browser.wait_for(lambda: "agent-ready" in browser.status(), "agent-ready")
                assert browser.of("status")[0]["sample_rate"] == rate

                await browser.send_audio(caller_speech(rate))
                # The microphone stays open (silence) while the echo plays.
                listening = asyncio.create_task(browser.send_audio(np.zeros(rate * 10, np.int16)))
                await browser.wait_for(lambda: browser.audio, "the echo")
                echo_item = browser.item_ids()[0]
                assert echo_item is not None
                await browser.wait_for(
                    lambda: browser.far.played_ms(echo_item) >= 1500, "1.5 s of echo played"
                )
                listening.cancel()

                # Barge in: talk over the echo; the bridge clears the page's playback.
                said = utterance(rate)
                barge_frames: list[float] = []
                barge = asyncio.create_task(browser.send_audio(said[: rate * 2], sent=barge_frames))
                await browser.wait_for(lambda: browser.clears, "clear after barge-in")
                played_before_clear = browser.far.played_ms(echo_item)
                barge.cancel()
                calls = list(bridge.services.calls)
                assert len(calls) == 1
                barge_ins = calls[0].call.barge_ins
                assert barge_ins and barge_ins[0].item_id == echo_item
                cut = barge_ins[0]
                # The bridge reacted to the first 0.8 s of speech it was sent, however long
                # a loaded host took to send it.
                heard_of_barge = sum(t <= cut.t - browser.t0 for t in barge_frames) * FRAME_MS
                assert 0 < heard_of_barge < 800, heard_of_barge
                # It cut the echo part-way: after the 1.5 s we waited for, before its end.
                assert 1500 <= played_before_clear < len(said) / rate * 1000 - 500

                # The echo is what was said: compare what arrived before the clear.
                heard = np.frombuffer(bytes(browser.audio[echo_item]), "<i2")
                lag = coarse_lag(said, heard)
                assert abs(lag) < rate // 2, f"echo is {lag} samples off"
                aligned = heard[max(lag, 0) :]
                ref = said[max(-lag, 0) :]
                n = int(1.2 * rate)
                score = best_correlation(ref[:n], aligned[:n], max_lag=40)
                assert score > 0.9, f"echo correlation {score:.3f}"

                # The model's item is cut where the page had stopped playing when the bridge
                # cut it (the clear itself takes a moment to get there: not the bridge's doing).
                assert cut.audio_end_ms is not None
                low, high = browser.played_when_cut(echo_item, cut.t)
                assert low - 40 <= cut.audio_end_ms <= high + 40, (cut, low, high)
                session = agent.sessions[0]
                await browser.wait_for(lambda: session.truncates, "the truncate at the agent")
                assert [t[0] for t in session.truncates] == [echo_item]
                assert session.errors == []
                # No audio of the interrupted item after the clear (they arrive in order).
                after_clear = browser.events[[k for _, k, _ in browser.events].index("clear") :]
                late = [d for _, k, d in after_clear if k == "audio"]
                assert all(d["meta_info"]["item_id"] != echo_item for d in late)

                texts = browser.of("text")
                assert any(
                    t["role"] == "user" and t["final"] and "caller speech" in t["text"]
                    for t in texts
                )
                assert any(t["role"] == "assistant" and not t["final"] for t in texts)

                assert await browser.call("hangup") == {"ok": True}
                await asyncio.wait_for(browser.disconnected.wait(), PATIENCE_S)
                assert browser.of("status")[-1] == {"state": "ended", "reason": "hung up"}
                await browser.close()
                await _no_calls(bridge)
                # Everything the bridge sent the agent has arrived by now: one truncate only.
                assert [t[0] for t in session.truncates] == [echo_item]
        finally:
            await agent.close()

    asyncio.run(main())


def whole_frames_of_a_chunk(size: int, bytes_per_ms: int) -> bool:
    """Paced audio comes in whole 20 ms frames, at most a chunk (half the lead) at a time;
    the first may be shorter when the model's first delta was."""
    chunk_ms = playout_chunk_ms(Settings().playout_lead_ms)
    return size > 0 and size % (20 * bytes_per_ms) == 0 and size <= chunk_ms * bytes_per_ms


def test_text_clear_and_greeting():
    """The greeting plays; ``clear`` stops it (acked); typed text gets a spoken answer."""

    async def main():
        async with running_bridge(Settings()) as bridge:
            browser = FakeBrowser(24000)
            await browser.connect(bridge.base_url)
            await browser.wait_for(lambda: browser.audio, "the greeting")
            greeting = browser.item_ids()[0]
            chunk = browser.of("audio")[0]
            assert chunk["meta_info"] == {"sample_rate": 24000, "item_id": greeting}
            assert whole_frames_of_a_chunk(len(base64.b64decode(chunk["data"])), 48)

            assert await browser.call("clear") == {"ok": True}
            await browser.wait_for(lambda: browser.clears, "clear")

            assert await browser.call("text", {"data": "What can you do?"}) == {"ok": True}
            await browser.wait_for(
                lambda: any(i != greeting for i in browser.item_ids()), "a reply"
            )
            reply = next(i for i in browser.item_ids() if i != greeting)
            assert reply is not None
            await browser.wait_for(
                lambda: any(t["role"] == "assistant" and t["final"] for t in browser.of("text")),
                "the reply's transcript",
            )
            await browser.wait_for(
                lambda: browser.far.played_ms(reply) >= 500, "half a second of the reply played"
            )
            # Not one more chunk of the greeting after the clear (events arrive in order),
            # all the while the reply was asked for, generated and half a second of it played.
            after_clear = browser.events[[k for _, k, _ in browser.events].index("clear") :]
            late = [d for _, k, d in after_clear if k == "audio"]
            assert late, "the reply's audio came after the clear"
            assert all(d["meta_info"]["item_id"] != greeting for d in late), (
                "audio kept coming after clear"
            )

            assert await browser.call("hangup") == {"ok": True}
            await asyncio.wait_for(browser.ended.wait(), PATIENCE_S)
            await browser.close()
            await _no_calls(bridge)

    asyncio.run(main())


def test_long_polling_binary_audio_at_48k():
    """Without WebSocket the session still works; audio may be a binary attachment."""

    async def main():
        async with running_bridge(Settings()) as bridge:
            browser = FakeBrowser(48000)
            await browser.connect(bridge.base_url, transports=["polling"])
            assert browser.sio.transport() == "polling"
            await browser.send_audio(np.zeros(48000 // 2, np.int16), binary=True)
            await browser.wait_for(lambda: browser.audio, "the greeting")
            chunk = browser.of("audio")[0]
            assert chunk["meta_info"]["sample_rate"] == 48000
            assert whole_frames_of_a_chunk(len(base64.b64decode(chunk["data"])), 96)
            assert browser.of("error") == []
            await browser.wait_for(lambda: browser.far.marks_played, "a mark played")
            assert await browser.call("hangup") == {"ok": True}
            await asyncio.wait_for(browser.ended.wait(), PATIENCE_S)
            await browser.close()
            await _no_calls(bridge)

    asyncio.run(main())


def test_bad_messages_are_dropped_with_an_error():
    async def main():
        async with running_bridge(Settings(agents=QUIET)) as bridge:
            browser = FakeBrowser(16000)
            await browser.connect(bridge.base_url)
            frame = np.zeros(320, "<i2").tobytes()
            b64 = base64.b64encode(frame).decode()
            await browser.emit("audio", {"data": b64, "meta_info": {"sample_rate": 8000}})
            await browser.emit("audio", {"data": b64[:-4] + "!!!!"})
            await browser.emit("audio", {"data": base64.b64encode(b"\x01\x02\x03").decode()})
            await browser.emit("audio", "not an object")
            await browser.emit("dance", {})
            big = base64.b64encode(bytes(70_000)).decode()  # over MAX_MESSAGE_BYTES (64 KiB)
            await browser.emit("audio", {"data": big, "meta_info": {"sample_rate": 16000}})
            empty = await browser.call("text", {"data": "   "})
            assert empty["ok"] is False and empty["error"]["code"] == "bad_message"
            codes = [
                "sample_rate_mismatch",
                "bad_audio",
                "bad_audio",
                "bad_message",
                "unknown_event",
                "too_large",
                "bad_message",
            ]
            await browser.wait_for(lambda: len(browser.of("error")) >= len(codes), "errors")
            assert [e["code"] for e in browser.of("error")] == codes
            assert all(e["message"] for e in browser.of("error"))
            # The session is still fine.
            await browser.emit("audio", {"data": b64, "meta_info": {"sample_rate": 16000}})
            assert await browser.call("text", {"data": "hi"}) == {"ok": True}
            assert bridge.services.metrics.frames_dropped >= len(codes)
            assert await browser.call("hangup") == {"ok": True}
            await browser.close()

    asyncio.run(main())


def test_transport_limit_cuts_the_connection():
    """Past four times MAX_MESSAGE_BYTES the transport itself refuses the message."""

    async def main():
        settings = Settings(agents=QUIET, max_message_bytes=16 * 1024)
        async with running_bridge(settings) as bridge:
            browser = FakeBrowser(24000)
            await browser.connect(bridge.base_url)
            await browser.wait_for(lambda: "connected" in browser.status(), "connected")
            huge = base64.b64encode(bytes(100_000)).decode()
            await browser.emit("audio", {"data": huge, "meta_info": {"sample_rate": 24000}})
            await asyncio.wait_for(browser.disconnected.wait(), PATIENCE_S)
            await browser.close()
            await _no_calls(bridge)

    asyncio.run(main())


def test_idle_session_is_closed():
    async def main():
        settings = Settings(agents=QUIET, softphone_idle_timeout_s=1.0)
        async with running_bridge(settings) as bridge:
            browser = FakeBrowser(24000)
            await browser.connect(bridge.base_url)
            # Silence does not count as activity.
            await browser.send_audio(np.zeros(int(24000 * 1.6), np.int16))
            await asyncio.wait_for(browser.ended.wait(), PATIENCE_S)
            assert browser.of("status")[-1] == {"state": "ended", "reason": "browser idle for 1 s"}
            await asyncio.wait_for(browser.disconnected.wait(), PATIENCE_S)
            await browser.close()
            await _no_calls(bridge)

    asyncio.run(main())


def test_browser_going_away_ends_the_call():
    async def main():
        async with running_bridge(Settings()) as bridge:
            browser = FakeBrowser(24000)
            await browser.connect(bridge.base_url)
            await browser.wait_for(lambda: browser.audio, "the greeting")
            assert len(bridge.services.calls) == 1
            await browser.close()
            await _no_calls(bridge)
            assert softphone_of(bridge).sessions == {}

    asyncio.run(main())


def test_refusals_carry_a_reason():
    async def main():
        settings = Settings(
            softphone_token="s3cret",
            softphone_max_sessions=1,
            softphone_allowed_origins=("https://app.example",),
        )
        async with running_bridge(settings) as bridge:
            url = bridge.base_url
            ok = {"token": "s3cret"}

            async def code(**kw):
                refused = await refusal(url, **kw)
                assert refused is not None, f"{kw} was accepted"
                assert refused["message"]
                return refused["data"]["code"]

            assert await code() == "unauthorized"
            assert await code(auth={"token": "guess"}) == "unauthorized"
            assert await code(auth={**ok, "agentId": "nobody"}) == "unknown_agent"
            assert await code(auth={**ok, "sample_rate": 44100}) == "bad_sample_rate"
            evil = {"Origin": "https://evil.example"}
            assert await code(auth=ok, headers=evil) == "origin_not_allowed"
            # Long-polling from a foreign origin is refused by the transport (no CORS).
            assert await code(auth=ok, headers=evil, transports=["polling"]) == "transport"
            # The token may come in the query string too.
            assert await refusal(url + "?token=s3cret") is None

            first = FakeBrowser(24000)
            await first.connect(url, auth=ok, headers={"Origin": url})
            assert await code(auth=ok, headers={"Origin": "https://app.example"}) == "busy"
            await first.close()
            await _no_calls(bridge)
            # A configured origin is allowed, over long-polling too.
            assert (
                await refusal(
                    url, auth=ok, headers={"Origin": "https://app.example"}, transports=["polling"]
                )
                is None
            )
            # Namespaces nobody serves do not exist (the default one is the Realtime proxy's).
            other = socketio.AsyncClient(reconnection=False)
            try:
                await other.connect(url, namespaces=["/nowhere"], auth=ok, wait_timeout=3)
                raise AssertionError("an unknown namespace accepted a connection")
            except socketio.exceptions.ConnectionError:
                pass
            finally:
                await other.shutdown()

            bridge.services.draining = True
            assert await code(auth=ok) == "draining"

    asyncio.run(main())


def test_same_origin_only_by_default():
    async def main():
        async with running_bridge(Settings(agents=QUIET)) as bridge:
            url = bridge.base_url
            assert await refusal(url, headers={"Origin": url}) is None
            refused = await refusal(url, headers={"Origin": "http://localhost:1"})
            assert refused and refused["data"]["code"] == "origin_not_allowed"
            await _no_calls(bridge)

    asyncio.run(main())


async def _no_calls(bridge, timeout: float = PATIENCE_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while bridge.services.calls or softphone_of(bridge).sessions:
        assert loop.time() < deadline, "the call did not end"
        await asyncio.sleep(0.02)
