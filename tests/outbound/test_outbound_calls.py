"""Outbound calls end to end on loopback: ``bridge call`` / ``POST /calls`` → the Twilio
stand-in (real SDK) → the simulated callee answers with the TwiML the stand-in received →
the bridge (real uvicorn) → the local agent; then the signed AMD answer decides."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.local_agent.response import GREETING_TRANSCRIPT
from bridge.outbound.amd import VOICEMAIL_REASON
from bridge.sim.caller import simulate_call
from bridge.sim.result import CallResult
from bridge.sim.twilio_cloud import RecordedRequest
from bridge.sim.webhook import parse_twiml
from tests.e2e import best_correlation, silence, until
from tests.outbound.helpers import CALLEE, CALLER_ID, VOICEMAIL, Deployment, deployment
from twiml.security import check_stream_token


def created(dep: Deployment) -> RecordedRequest:
    return dep.cloud.wait_for(lambda r: r.method == "POST" and r.path.endswith("/Calls.json"))


async def answer(dep: Deployment, sid: str, twiml: str, seconds: float) -> CallResult:
    """The callee picks up: Twilio runs the TwiML of ``calls.create`` for call ``sid``."""
    return await simulate_call(
        dep.bridge.base_url,
        silence(0.2),
        public_url=dep.public_url,
        auth_token=dep.cloud.auth_token,
        from_=CALLER_ID,
        to=CALLEE,
        call_sid=sid,
        twiml=twiml,
        hangup_after_s=seconds,
    )


def live(dep: Deployment, sid: str) -> Any:
    return next((r for r in dep.bridge.services.calls if r.call.call_sid == sid), None)


async def amd(dep: Deployment, sid: str, answered_by: str) -> None:
    params = {"AccountSid": dep.cloud.account_sid, "CallSid": sid, "AnsweredBy": answered_by}
    assert await dep.post_signed("/twilio/amd", params) == 200


async def admin_post(dep: Deployment, body: object, *, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(dep.bridge.base_url + "/calls", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def heard_in_full(dep: Deployment, result: CallResult) -> None:
    """The agent's last answer (the voicemail) is in what the callee heard, all of it."""
    [session] = dep.agent.sessions
    item = [k for k, v in session.responses.items() if v][-1]
    pcm = np.frombuffer(bytes(session.responses[item]), dtype="<i2").astype(np.float64)
    pcm8 = pcm[: len(pcm) // 3 * 3].reshape(-1, 3).mean(axis=1)
    score, at = best_correlation(pcm8, result.heard.astype(np.float64))
    assert score > 0.9, score
    assert at + len(pcm8) <= len(result.heard)


def test_bridge_call_with_amd_leaves_the_voicemail_on_a_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            status, out, err = await dep.cli(
                monkeypatch, "call", CALLEE, "--agent", "sales", "--amd"
            )
            assert status == 0, err
            request = created(dep)
            [sid] = dep.cloud.calls
            assert sid in out
            form = request.form
            assert (form["To"], form["From"]) == (CALLEE, CALLER_ID)
            assert form["StatusCallback"] == dep.public_url + "/twilio/status"
            assert request.form_lists["StatusCallbackEvent"] == [
                "initiated",
                "ringing",
                "answered",
                "completed",
            ]
            assert form["MachineDetection"] == "DetectMessageEnd"
            assert form["AsyncAmd"] == "true"
            assert form["AsyncAmdStatusCallback"] == dep.public_url + "/twilio/amd"
            target = parse_twiml(form["Twiml"], request_url=dep.public_url, require_wss=False)
            assert target.url == dep.public_url.replace("http", "ws") + "/twilio/media"
            params = target.parameters
            assert params["agent"] == "sales" and params["direction"] == "outbound"
            check_stream_token(
                dep.settings.stream_token_secret, params["ref"], params["token"], time.time()
            )
            connect = ET.fromstring(form["Twiml"]).find("Connect")
            assert connect is not None and "/twilio/after" in connect.get("action", "")

            call = asyncio.create_task(answer(dep, sid, form["Twiml"], 30.0))
            await until(lambda: live(dep, sid) and live(dep, sid).call.model_ready, "the stream")
            await amd(dep, sid, "machine_end_beep")
            result = await call
            said = dep.timeline.said(sid)
            [hangup] = dep.timeline.kinds(sid, "hangup")
        assert said == [VOICEMAIL], said  # the greeting waited for the answer: never said
        assert hangup["reason"] == VOICEMAIL_REASON
        assert result.closed_by == "bridge"
        heard_in_full(dep, result)

    asyncio.run(main())


def test_admin_post_calls_and_a_human_gets_the_conversation(tmp_path: Path) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            token = dep.env["ADMIN_TOKEN"]
            body = {"to": CALLEE, "agent": "sales", "machine_detection": True}
            assert (await admin_post(dep, body, token=None))[0] == 401
            status, answer_ = await admin_post(dep, {"to": "555-1234"}, token=token)
            assert status == 400 and "E.164" in answer_["error"]
            status, answer_ = await admin_post(dep, {"to": CALLEE, "agent": "nobody"}, token=token)
            assert status == 400 and "nobody" in answer_["error"]
            assert (await admin_post(dep, ["not", "an", "object"], token=token))[0] == 400
            assert not dep.cloud.calls  # nothing was placed for a bad request
            status, answer_ = await admin_post(dep, body, token=token)
            assert status == 201, answer_
            sid = answer_["sid"]
            assert answer_["machine_detection"] is True
            twiml = created(dep).form["Twiml"]

            call = asyncio.create_task(answer(dep, sid, twiml, 5.0))
            await until(lambda: live(dep, sid) and live(dep, sid).call.model_ready, "the stream")
            await amd(dep, sid, "human")
            await until(lambda: GREETING_TRANSCRIPT in dep.timeline.said(sid), "the greeting")
            result = await call
        assert dep.timeline.kinds(sid, "hangup") == []
        assert result.closed_by == "caller"  # the conversation went on until the callee left

    asyncio.run(main())


def test_an_amd_answer_before_the_stream_and_a_reused_twiml(tmp_path: Path) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            from bridge.outbound.place import place_call

            placed = await place_call(dep.settings, CALLEE, agent="sales", amd=True)
            await amd(dep, placed.call_sid, "machine_end_silence")  # no stream yet: kept
            result = await answer(dep, placed.call_sid, placed.twiml, 30.0)
            assert dep.timeline.said(placed.call_sid) == [VOICEMAIL]
            assert result.closed_by == "bridge"
            # The same TwiML (its one-time stream reference) does not open a second call.
            again = await answer(dep, "CA" + "e" * 32, placed.twiml, 5.0)
        assert again.close_code == 1008
        assert dep.timeline.said("CA" + "e" * 32) == []

    asyncio.run(main())


def test_callbacks_are_signed_like_the_voice_webhook(tmp_path: Path) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            params = {"AccountSid": dep.cloud.account_sid, "CallSid": "CA" + "1" * 32}
            status = params | {"CallStatus": "ringing"}
            assert await dep.post_signed("/twilio/status", status) == 204
            assert await dep.post_signed("/twilio/status", status, token=None) == 403
            assert await dep.post_signed("/twilio/status", status, token="f" * 32) == 403
            machine = params | {"AnsweredBy": "machine_end_beep"}
            assert await dep.post_signed("/twilio/amd", machine, token=None) == 403
            assert await dep.post_signed("/twilio/amd", machine, token="f" * 32) == 403

    asyncio.run(main())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call", "5551234"], "E.164"),
        (["call", "+15551234567", "--agent", "ghost"], "ghost"),
        (["call", "+15551234567", "--from", "nope"], "from must be"),
    ],
)
def test_bridge_call_refuses_bad_input_before_calling_twilio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            status, _, err = await dep.cli(monkeypatch, *argv)
            assert status == 2 and message in err, err
            assert dep.cloud.requests == []

    asyncio.run(main())
