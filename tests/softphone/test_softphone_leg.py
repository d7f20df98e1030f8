"""SoftphoneLeg without a network: what it emits, what it drops, when it ends."""

import asyncio
import base64
from typing import Any

from bridge.call import CallEvent
from bridge.inputs import CallerAudio, FarEndMark, HangUp, Interrupt, TextInput
from bridge.leg import Ending
from bridge.metrics import Metrics
from bridge.playout import ClearPlayback, SendAudio, SendMark
from bridge.softphone.leg import SoftphoneLeg, public_reason
from bridge.softphone.protocol import AudioIn, ClearIn, HangupIn, MarkIn, TextIn


class Recorder:
    def __init__(self):
        self.sent = []
        self.disconnects = 0

    async def emit(self, event, data):
        self.sent.append((event, data))

    async def disconnect(self):
        self.disconnects += 1


def make_leg(rec, **kw):
    options: dict[str, Any] = {
        "session_id": "SP1",
        "sample_rate": 16000,
        "metrics": Metrics(),
        "idle_timeout_s": 60.0,
    }
    options.update(kw)
    return SoftphoneLeg(rec.emit, rec.disconnect, **options)


def test_send_maps_playout_to_events():
    async def main():
        rec = Recorder()
        leg = make_leg(rec)
        await leg.send(
            [
                SendAudio(b"\x01\x00" * 4),
                SendMark("1:item_a"),
                SendAudio(b"\x02\x00"),
                SendMark("2:item_a"),
                ClearPlayback(),
            ]
        )
        await leg.send([SendAudio(b"\x03\x00")])  # no mark in this batch: the last item
        kinds = [e for e, _ in rec.sent]
        assert kinds == ["audio", "mark", "audio", "mark", "clear", "audio"]
        first = rec.sent[0][1]
        assert base64.b64decode(first["data"]) == b"\x01\x00" * 4
        assert first["meta_info"] == {"sample_rate": 16000, "item_id": "item_a"}
        assert rec.sent[1][1] == {"name": "1:item_a"}
        assert rec.sent[5][1]["meta_info"]["item_id"] == "item_a"

    asyncio.run(main())


def test_slow_browser_loses_audio_not_marks():
    async def main():
        rec = Recorder()
        backlog = [0]
        leg = make_leg(rec, max_backlog=10, backlog=lambda: backlog[0])
        await leg.send([SendAudio(b"\x00\x00"), SendMark("1:a")])
        backlog[0] = 11
        await leg.send([SendAudio(b"\x00\x00"), SendMark("2:a"), ClearPlayback()])
        assert [e for e, _ in rec.sent] == ["audio", "mark", "mark", "clear"]
        assert leg.dropped_audio == 1

    asyncio.run(main())


def test_inbox_is_bounded_but_hangup_always_gets_through():
    async def main():
        rec = Recorder()
        metrics = Metrics()
        leg = make_leg(rec, max_inbox=3, metrics=metrics)
        assert all(leg.offer(AudioIn(b"\x00\x00")) for _ in range(3))
        assert not leg.offer(AudioIn(b"\x00\x00"))
        # marks and commands have their own allowance, bounded too
        assert all(leg.offer(MarkIn(f"{i}:a")) for i in range(3))
        assert not leg.offer(MarkIn("9:a"))
        assert not leg.offer(TextIn("hi"))
        assert leg.dropped_in == 3 and metrics.frames_dropped == 3
        assert leg.offer(HangupIn())
        assert not leg.offer(TextIn("late"))

    asyncio.run(main())


class FakeRunner:
    """Applies each input to the call the way ``CallRunner.feed`` does, and counts flushes."""

    def __init__(self, call):
        self.call = call
        self.flushes = 0
        self.triggers = []

    async def feed(self, leg_input, now):
        match leg_input:
            case CallerAudio(payload=pcm):
                self.triggers.append(now)
                self.call.phone_audio(pcm, now)
            case FarEndMark(name=name):
                self.call.phone_mark(name, now)
            case TextInput(text=text):
                self.call.text_input(text, now)
            case Interrupt():
                self.triggers.append(now)
                self.call.interrupt(now)
            case HangUp(reason=reason):
                return Ending(reason)
        self.flushes += 1
        return None

    @staticmethod
    def clock():
        import time

        return time.monotonic()


class FakePlayout:
    active = False


class FakeCall:
    call_sid = "SP1"
    agent: Any = None

    def __init__(self):
        self.playout = FakePlayout()
        self.fed = []

    def phone_audio(self, pcm, now):
        self.fed.append(("audio", pcm))

    def phone_mark(self, name, now):
        self.fed.append(("mark", name))

    def text_input(self, text, now):
        self.fed.append(("text", text))

    def interrupt(self, now):
        self.fed.append(("interrupt", None))


def test_pump_feeds_the_call_in_order_and_ends_on_hangup():
    async def main():
        rec = Recorder()
        leg = make_leg(rec)
        call = FakeCall()
        runner = FakeRunner(call)
        for event in (AudioIn(b"\x01\x00"), MarkIn("1:a"), TextIn("hi"), ClearIn()):
            leg.offer(event)
        pump = asyncio.create_task(leg.pump(runner))
        await asyncio.sleep(0.05)
        assert call.fed == [
            ("audio", b"\x01\x00"),
            ("mark", "1:a"),
            ("text", "hi"),
            ("interrupt", None),
        ]
        assert runner.flushes == 4 and len(runner.triggers) == 2
        leg.offer(HangupIn())
        assert (await asyncio.wait_for(pump, 1)).reason == "hung up"
        await leg.close("hung up")
        assert rec.sent[-1] == ("status", {"state": "ended", "reason": "hung up"})
        assert rec.disconnects == 1
        await leg.close("again")  # idempotent
        assert rec.disconnects == 1

    asyncio.run(main())


def test_idle_unless_someone_talks_or_the_agent_plays():
    async def main():
        rec = Recorder()
        leg = make_leg(rec, idle_timeout_s=0.2)
        call = FakeCall()
        runner = FakeRunner(call)
        pump = asyncio.create_task(leg.pump(runner))
        for _ in range(4):  # the agent is speaking: not idle
            await asyncio.sleep(0.1)
            await leg.send([SendAudio(b"\x00\x00"), SendMark("1:a")])
        assert not pump.done()
        for _ in range(3):  # speech detected by the model keeps it alive
            await asyncio.sleep(0.1)
            leg.observe(call, [CallEvent(0.0, "speech_started", {})])
            leg.offer(AudioIn(b"\x00\x00"))  # wakes the pump
        assert not pump.done()
        assert (await asyncio.wait_for(pump, 1)).reason == "browser idle for 0.2 s"

    asyncio.run(main())


def test_browser_gone_means_no_more_emits():
    async def main():
        rec = Recorder()
        leg = make_leg(rec)
        call = FakeCall()
        runner = FakeRunner(call)
        pump = asyncio.create_task(leg.pump(runner))
        leg.disconnected("transport close")
        assert (await asyncio.wait_for(pump, 1)).reason == (
            "browser disconnected (transport close)"
        )
        await leg.send([SendAudio(b"\x00\x00")])
        await leg.close("browser disconnected (transport close)")
        assert rec.sent == [] and rec.disconnects == 0

    asyncio.run(main())


def test_transcripts_and_readiness_reach_the_page():
    async def main():
        rec = Recorder()
        leg = make_leg(rec)
        call = FakeCall()
        runner = FakeRunner(call)

        class AgentStub:
            name = "front"

        call.agent = AgentStub()
        pump = asyncio.create_task(leg.pump(runner))
        leg.observe(
            call,
            [
                CallEvent(0.0, "model_connected", {}),
                CallEvent(0.1, "transcript_delta", {"role": "assistant", "text": "Hel"}),
                CallEvent(0.2, "transcript", {"role": "assistant", "text": "Hello"}),
                CallEvent(0.3, "transcript", {"role": "user", "text": "[caller speech 1.0 s]"}),
                CallEvent(0.4, "model_error", {"code": "x", "message": "secret details"}),
            ],
        )
        await asyncio.sleep(0.05)
        assert rec.sent == [
            ("status", {"state": "agent-ready", "agent": "front"}),
            ("text", {"role": "assistant", "text": "Hel", "final": False}),
            ("text", {"role": "assistant", "text": "Hello", "final": True}),
            ("text", {"role": "user", "text": "[caller speech 1.0 s]", "final": True}),
            ("error", {"code": "agent_error", "message": "the agent reported x"}),
        ]
        leg.offer(HangupIn())
        await pump
        await leg.close("hung up")

    asyncio.run(main())


def test_public_reason_hides_internals():
    assert public_reason("internal error: KeyError: 'x'") == "internal error"
    assert public_reason("model unreachable: OSError: 127.0.0.1:1") == ("the agent is unreachable")
    assert public_reason("model session closed: bye") == "the agent ended the session"
    assert public_reason("hung up") == "hung up"
