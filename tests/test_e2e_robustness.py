"""Bad input, refusals and lifecycle, over real sockets: one bad call never disturbs another."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.config import Settings
from bridge.phone import leg
from bridge.sim import messages
from bridge.sim.caller import simulate_call
from bridge.sim.webhook import connect_url, parse_twiml, post_voice_webhook, sign, voice_params
from tests.e2e import PATIENCE_S, Rig, fixture, match_through_gaps, rig, until

ACCOUNT = "AC" + "1" * 32
FRAME = b"\xff" * 160  # 20 ms of μ-law silence


@dataclass
class Stream:
    ws: ClientConnection
    call_sid: str
    stream_sid: str
    seq: int = 1

    def next(self) -> int:
        self.seq += 1
        return self.seq

    async def media(self, payload: bytes = FRAME) -> None:
        n = self.next()
        await self.ws.send(
            messages.media(
                n, stream_sid=self.stream_sid, chunk=n, timestamp_ms=20 * n, payload=payload
            )
        )

    async def stop(self) -> None:
        await self.ws.send(
            messages.stop(
                self.next(), stream_sid=self.stream_sid, account_sid=ACCOUNT, call_sid=self.call_sid
            )
        )


async def twiml_for(r: Rig, call_sid: str) -> tuple[str, dict[str, str]]:
    b = r.bridge
    twiml, _ = await post_voice_webhook(
        b.base_url,
        voice_params(call_sid, ACCOUNT, "+15550001111", "+15550002222"),
        public_url=b.public_url,
        auth_token=b.auth_token,
    )
    target = parse_twiml(twiml, request_url=b.public_url + "/twilio/voice", require_wss=False)
    return target.url, target.parameters


@contextlib.asynccontextmanager
async def stream(
    r: Rig, n: int, *, start: bool = True, parameters: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    call_sid = f"CA{n:032d}"
    url, params = await twiml_for(r, call_sid)
    headers = {"X-Twilio-Signature": sign(r.bridge.auth_token or "", url, {})}
    async with connect(
        connect_url(url, r.bridge.base_url, r.bridge.public_url), additional_headers=headers
    ) as ws:
        s = Stream(ws, call_sid, f"MZ{n:032d}")
        await ws.send(messages.connected())
        if start:
            await ws.send(
                messages.start(
                    1,
                    stream_sid=s.stream_sid,
                    account_sid=ACCOUNT,
                    call_sid=call_sid,
                    custom_parameters=parameters or params,
                )
            )
        yield s


async def closed_within(ws: ClientConnection, seconds: float = PATIENCE_S) -> int | None:
    """Drain what the bridge sends until it closes; the close code. ``TimeoutError`` if it
    is still open after ``seconds``, a generous wait: what is judged is the code, not how
    soon it came."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(seconds):
            async for _ in ws:
                pass
    return ws.close_code


async def settle(r: Rig, seconds: float = PATIENCE_S) -> None:
    """Wait for every call and model session to end (the asserts after it say if not)."""
    deadline = time.monotonic() + seconds
    while (r.bridge.services.calls or open_sessions(r)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def open_sessions(r: Rig) -> list[object]:
    """Model sessions whose socket is still open."""
    return [s for s in r.agent.sessions if s not in r.agent.closed_sessions]


BAD_FRAMES = {
    "non-JSON text": "this is not json",
    "binary frame": b"\x00\x01\x02",
    "unknown event": '{"event":"dance","sequenceNumber":"3","streamSid":"%s"}',
    "wrong streamSid": None,  # built below
    "invalid base64": None,
    "empty payload": None,
    "oversized message": "x" * (70 * 1024),
}


def bad_frame(kind: str, s: Stream) -> str | bytes:
    frame = messages.media(
        s.next(), stream_sid=s.stream_sid, chunk=1, timestamp_ms=0, payload=FRAME
    )
    match kind:
        case "wrong streamSid":
            return frame.replace(s.stream_sid, "MZ" + "9" * 32)
        case "invalid base64":
            return frame.replace('"payload":"', '"payload":"%%%')
        case "empty payload":
            return messages.media(
                s.next(), stream_sid=s.stream_sid, chunk=1, timestamp_ms=0, payload=b"x"
            )[:0] or frame.replace(frame.split('"payload":"')[1].split('"')[0], "")
        case "unknown event":
            return BAD_FRAMES[kind] % s.stream_sid  # type: ignore[operator]
        case _:
            return BAD_FRAMES[kind]  # type: ignore[return-value]


@pytest.mark.parametrize("kind", list(BAD_FRAMES))
def test_a_bad_frame_is_dropped_with_one_log_line_and_the_call_goes_on(kind, caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig() as r, stream(r, 1) as s:
            for _ in range(5):
                await s.media()
            await s.ws.send(bad_frame(kind, s))
            for _ in range(5):
                await s.media()
            await s.stop()
            assert await closed_within(s.ws) == 1000  # a normal end, not an error
            await settle(r)
            assert r.bridge.services.metrics.frames_dropped == 1
            assert r.bridge.services.metrics.calls_failed == 0
            assert r.bridge.services.metrics.frames_in == 10

    asyncio.run(main())
    lines = [rec for rec in caplog.records if "dropped frame" in rec.getMessage()]
    assert len(lines) == 1
    assert "CA" + "0" * 31 + "1" in lines[0].getMessage()  # says which call


def test_media_before_start_is_dropped_then_the_call_starts(caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig() as r, stream(r, 2, start=False) as s:
            await s.media()
            _, params = await twiml_for(r, s.call_sid)
            await s.ws.send(
                messages.start(
                    1,
                    stream_sid=s.stream_sid,
                    account_sid=ACCOUNT,
                    call_sid=s.call_sid,
                    custom_parameters=params,
                )
            )
            await s.media()
            await s.stop()
            assert await closed_within(s.ws) == 1000
            assert r.bridge.services.metrics.frames_dropped == 1
            assert r.bridge.services.metrics.calls_started == 1

    asyncio.run(main())
    assert any("before start" in rec.getMessage() for rec in caplog.records)


def test_a_second_start_closes_the_call_cleanly(caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig() as r, stream(r, 3) as s:
            await s.media()
            _, params = await twiml_for(r, s.call_sid)
            await s.ws.send(
                messages.start(
                    9,
                    stream_sid=s.stream_sid,
                    account_sid=ACCOUNT,
                    call_sid=s.call_sid,
                    custom_parameters=params,
                )
            )
            assert await closed_within(s.ws) == 1008
            await settle(r)
            assert not r.bridge.services.calls
            assert not open_sessions(r)  # the model session went with it

    asyncio.run(main())
    assert any("closing" in rec.getMessage() and "CA" in rec.getMessage() for rec in caplog.records)


def test_a_peer_that_vanishes_mid_frame_ends_only_its_own_call():
    async def main() -> None:
        async with rig() as r:
            caller = fixture("caller-hello.wav")
            good = asyncio.create_task(
                simulate_call(
                    r.bridge.base_url,
                    caller,
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    tail_s=0.5,
                )
            )
            for n in range(10, 15):
                async with stream(r, n) as s:
                    for _ in range(3):
                        await s.media()
                    # Half a masked text frame that announces 1000 bytes, then gone.
                    header = struct.pack("!BB", 0x81, 0x80 | 126) + struct.pack("!H", 1000)
                    s.ws.transport.write(header + b"\x00" * 4 + b'{"event":"me')
                    s.ws.transport.abort()
                with contextlib.suppress(ConnectionClosed):
                    await s.ws.wait_closed()
            result = await good
            await settle(r)
            assert not r.bridge.services.calls
            assert not open_sessions(r)
            metrics = r.bridge.services.metrics
        assert result.violations == [] and result.closed_by == "caller"
        score, _ = match_through_gaps(caller[int(4.6 * 8000) : int(8.8 * 8000)], result.heard)
        assert score > 0.9  # the good call heard its echo, undisturbed
        assert metrics.calls_started == 6

    asyncio.run(main())


def test_a_flood_of_garbage_does_not_disturb_another_call(caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig() as r:
            caller = fixture("caller-hello.wav")
            good = asyncio.create_task(
                simulate_call(
                    r.bridge.base_url,
                    caller,
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    tail_s=0.5,
                )
            )
            async with stream(r, 20) as s:
                for i in range(3000):
                    await s.ws.send(f"garbage {i}" if i % 2 else b"\x00" * 100)
                    if i % 100 == 0:
                        await asyncio.sleep(0.05)
                await s.stop()
                await closed_within(s.ws)
            result = await good
        assert result.violations == []
        score, _ = match_through_gaps(caller[int(4.6 * 8000) : int(8.8 * 8000)], result.heard)
        assert score > 0.9

    asyncio.run(main())
    garbage_lines = [r for r in caplog.records if "CA" + "0" * 30 + "20" in r.getMessage()]
    assert len(garbage_lines) < 20  # a flood cannot flood the log


def test_handshake_without_a_valid_signature_is_refused():
    async def main() -> None:
        async with rig() as r:
            url, _ = await twiml_for(r, "CA" + "4" * 32)
            target = connect_url(url, r.bridge.base_url, r.bridge.public_url)
            for headers in ({}, {"X-Twilio-Signature": "Zm9yZ2Vk"}):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(target, additional_headers=headers):
                        pass
                assert info.value.response.status_code == 403
            assert not r.agent.sessions  # no model session was opened on our key

    asyncio.run(main())


@pytest.mark.parametrize("token", ["", "not-a-token", "other-call"])
def test_a_stream_without_a_valid_token_for_its_call_is_refused(token, caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig() as r:
            _, params = await twiml_for(r, "CA" + "5" * 32)
            # "other-call": a real token, but for another CallSid.
            forged = params if token == "other-call" else {**params, "token": token}
            async with stream(r, 6, parameters=forged) as s:
                assert await closed_within(s.ws) == 1008
            assert not r.agent.sessions
            assert r.bridge.services.metrics.calls_started == 0

    asyncio.run(main())
    assert any("refused" in rec.getMessage() for rec in caplog.records)


def test_a_stream_that_never_starts_is_closed(monkeypatch):
    monkeypatch.setattr(leg, "START_TIMEOUT_S", 0.3)

    async def main() -> None:
        async with rig() as r, stream(r, 7, start=False) as s:
            assert await closed_within(s.ws) == 1008
            assert not r.agent.sessions

    asyncio.run(main())


def test_stop_closes_the_model_session_within_a_second():
    async def main() -> None:
        stopped: list[float] = []  # when the bridge had the stop in hand (its clock)
        async with rig() as r:
            r.bridge.services.observers.append(
                lambda call, events: stopped.extend(
                    call.started_at + e.t for e in events if e.kind == "closed"
                )
            )
            async with stream(r, 8) as s:
                for _ in range(10):
                    await s.media()
                await until(lambda: len(r.agent.sessions) == 1, "the model session")
                await s.stop()
                await until(
                    lambda: r.agent.closed_sessions, "the model session to close", poll=0.005
                )
                closed_at = time.monotonic()
                await until(lambda: stopped, "the bridge's record of the stop")
                # Within a second of the bridge reading the stop (on a loaded host the stop
                # itself may take a while to be read: that is not the bridge's to answer for).
                assert closed_at - stopped[0] < 1.0, closed_at - stopped[0]
                assert await closed_within(s.ws) == 1000

    asyncio.run(main())


def test_when_the_model_session_ends_the_stream_is_closed_with_the_reason(caplog):
    # Issue 9: an ended session is replaced mid-call, so the stream closes only once no new
    # session can be opened (here the service refuses every handshake after the first).
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig(agent_options={"max_duration_s": 0.5}) as r, stream(r, 9) as s:
            for _ in range(5):
                await s.media()
            await until(lambda: r.agent.sessions, "the model session")
            r.agent.faults.refuse_first = 100
            code = await closed_within(s.ws)
            assert code is not None and code != 1000
            await settle(r)
            assert r.bridge.services.metrics.calls_failed == 1

    asyncio.run(main())
    assert any("model session closed" in rec.getMessage() for rec in caplog.records)


def test_an_unreachable_model_ends_the_call_with_the_reason(caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig(model_url="ws://127.0.0.1:9/v1/realtime") as r, stream(r, 11) as s:
            code = await closed_within(s.ws)
            assert code is not None and code != 1000
            assert r.bridge.services.metrics.calls_failed == 1

    asyncio.run(main())
    assert any("model unreachable" in rec.getMessage() for rec in caplog.records)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_a_hundred_calls_in_a_row_leave_nothing_behind():
    async def one(r: Rig, n: int) -> None:
        async with stream(r, 1000 + n) as s:
            for _ in range(5):
                await s.media(np.full(160, 0x7F, dtype=np.uint8).tobytes())
            await s.stop()
            assert await closed_within(s.ws) == 1000

    async def main() -> None:
        async with rig() as r:
            for n in range(10):  # warm-up: imports, caches, first allocations
                await one(r, n)
            await settle(r)
            gc.collect()
            tasks0, fds0, rss0 = (
                len(asyncio.all_tasks()),
                len(os.listdir("/proc/self/fd")),
                (_rss_kib()),
            )
            for n in range(10, 110):
                await one(r, n)
            await settle(r)
            gc.collect()
            await until(lambda: len(asyncio.all_tasks()) <= tasks0, "the calls' tasks to end")
            await until(lambda: len(os.listdir("/proc/self/fd")) <= fds0 + 2, "sockets to close")
            assert not r.bridge.services.calls
            assert r.bridge.services.metrics.calls_active == 0
            assert r.bridge.services.metrics.calls_started == 110
            assert r.bridge.services.metrics.calls_failed == 0
            assert not open_sessions(r)
            assert len(asyncio.all_tasks()) <= tasks0
            assert len(os.listdir("/proc/self/fd")) <= fds0 + 2
            # 100 calls: a leak of even 50 KiB a call would show as 5 MiB.
            assert _rss_kib() - rss0 < 4 * 1024, _rss_kib() - rss0

    asyncio.run(main())


def test_streams_past_max_calls_are_refused():
    async def main() -> None:
        async with rig(Settings(max_calls=1)) as r:
            b = r.bridge
            # A second call's webhook is answered before the first call is live...
            second_sid = "CA" + "3" * 32
            url, params = await twiml_for(r, second_sid)
            async with stream(r, 30) as first:
                await first.media()
                await until(lambda: b.services.calls, "the first call to be live", poll=0.01)
                # ...so its stream, arriving now, is turned away.
                headers = {"X-Twilio-Signature": sign(b.auth_token or "", url, {})}
                async with connect(
                    connect_url(url, b.base_url, b.public_url), additional_headers=headers
                ) as ws:
                    await ws.send(messages.connected())
                    await ws.send(
                        messages.start(
                            1,
                            stream_sid="MZ" + "3" * 32,
                            account_sid=ACCOUNT,
                            call_sid=second_sid,
                            custom_parameters=params,
                        )
                    )
                    assert await closed_within(ws) == 1013
                # A new call at the webhook is answered busy.
                twiml, _ = await post_voice_webhook(
                    b.base_url,
                    voice_params("CA" + "4" * 32, ACCOUNT, "+15550001111", "+15550002222"),
                    public_url=b.public_url,
                    auth_token=b.auth_token,
                )
                assert '<Reject reason="busy"' in twiml
                await first.stop()
            assert b.services.metrics.calls_started == 1

    asyncio.run(main())
