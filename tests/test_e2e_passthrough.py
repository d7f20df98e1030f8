"""μ-law pass-through (an agent with ``model_audio = "pcmu"``, or ``"pcmu-in"`` toward the
model only) over real loopback sockets: the caller's μ-law reaches the model untouched, the
model's μ-law (or its PCM16, transcoded) reaches the caller, and barge-ins cut as exactly
as with transcoding both ways."""

from __future__ import annotations

import base64

import pytest

from bridge.agents import Agent
from bridge.audio.g711 import ulaw_encode
from bridge.audio.resample import resample_offline
from bridge.audio.wav import read_wav
from bridge.config import Settings
from bridge.sim.caller import simulate_call
from tests.e2e import FIXTURES, fixture, match_through_gaps, rig, run_undisturbed
from tests.test_e2e_call import barge_ins_within_20_ms

PCMU = {"type": "audio/pcmu"}
PCM = {"type": "audio/pcm", "rate": 24000}


@pytest.mark.parametrize(("model_audio", "spoken"), [("pcmu", PCMU), ("pcmu-in", PCM)])
def test_pass_through_call_sends_mulaw_untouched_and_plays_the_agent(model_audio, spoken):
    async def main() -> None:
        settings = Settings(agents=(Agent(model_audio=model_audio),))
        async with rig(settings) as r:
            caller = fixture("caller-hello.wav")
            result = await simulate_call(
                r.bridge.base_url,
                caller,
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=1.0,
            )
            (session,) = r.agent.sessions
            assert session.errors == []
            received = session.received
        assert result.violations == []
        assert result.closed_by == "caller"

        (update,) = received["session.update"][:1]
        audio = update["session"]["audio"]
        assert audio["input"]["format"] == PCMU and audio["output"]["format"] == spoken

        # Every append is a run of what the caller sent, byte for byte, a batch at a time.
        sent = ulaw_encode(caller) + b"\xff" * 8000 * 2  # then silence while listening
        appends = [base64.b64decode(e["audio"]) for e in received["input_audio_buffer.append"]]
        assert appends
        for chunk in appends:
            assert len(chunk) == settings.uplink_batch_ms * 8
            assert chunk in sent

        # The caller hears the greeting and the echo of what they said.
        greeting, rate = read_wav(FIXTURES.parent / "bridge/local_agent/greeting-24k.wav")
        score, _ = match_through_gaps(resample_offline(greeting, rate, 8000)[:16000], result.heard)
        assert score > 0.9, score
        score, at = match_through_gaps(caller[int(4.6 * 8000) : int(8.8 * 8000)], result.heard)
        assert score > 0.9, score
        assert at / 8000 > 9.0

    run_undisturbed(main())


# μ-law in plays the default downlink (its barge-ins are measured there too): enough of
# them here to show the truncates count in the model's PCM16 milliseconds, not μ-law's.
@pytest.mark.parametrize(("model_audio", "needed"), [("pcmu", 20), ("pcmu-in", 8)])
def test_pass_through_barge_ins_truncate_at_what_the_caller_heard(model_audio, needed):
    run_undisturbed(barge_ins_within_20_ms(needed, model_audio=model_audio))
