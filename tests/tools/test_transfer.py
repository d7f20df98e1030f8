"""transfer_call over the wire: simulated Twilio caller → bridge → local agent, with the
Twilio REST stand-in (bridge.sim.twilio_cloud) on loopback taking the redirect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.agents import Agent
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge
from bridge.local_agent import LocalAgentServer, serve_local_agent
from bridge.sim.caller import simulate_call
from bridge.sim.result import CallResult
from bridge.sim.twilio_cloud import TwilioCloud
from tests.e2e import PATIENCE_S, silence
from tests.softphone.helpers import FakeBrowser
from tests.tools.helpers import agent_from
from tests.tools.test_tools_e2e import goodbye_heard_to_the_end

AGENT = """greeting = ''
dtmf_max_digits = 1
local_tool_triggers = {{ dtmf_0 = {trigger!r} }}
[agents.test.transfer]
targets = {{ sales = "+15550100", support = "sip:help@example.com" }}
notice = "Transferring you to sales now."
caller_id = "+15550199"
timeout_s = 20
"""
SALES = 'transfer_call {"target": "sales", "reason": "wants a quote"}'


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


class Timeline:
    """Every event of every call; ``when`` sets an asyncio event once a condition holds."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.watch: list[tuple[Callable[[CallEvent], bool], asyncio.Event]] = []

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        self.events.extend(events)
        for event in events:
            for condition, flag in self.watch:
                if condition(event):
                    flag.set()

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e.detail for e in self.events if e.kind == kind]

    def said(self) -> list[str]:
        return [d["text"] for d in self.kinds("transcript") if d.get("role") == "assistant"]


@dataclass
class Run:
    bridge: RunningBridge
    timeline: Timeline
    local: LocalAgentServer


@contextlib.asynccontextmanager
async def bridge_with(agent: Agent, cloud: TwilioCloud, token: str) -> AsyncIterator[Run]:
    """A signed bridge (auth token ``token``) whose REST calls go to ``cloud``."""
    local = await serve_local_agent("127.0.0.1", 0)
    settings = Settings(
        agents=(agent,),
        default_agent="test",
        twilio_auth_token=token,
        twilio_account_sid=cloud.account_sid,
        twilio_api_base_url=cloud.url,
    )
    try:
        async with running_bridge(settings, model_url=local.url) as bridge:
            timeline = Timeline()
            bridge.services.observers.append(timeline.observe)
            yield Run(bridge, timeline, local)
        assert [e for s in local.sessions for e in s.errors] == []
    finally:
        await local.close()


async def phone_call(run: Run, cloud: TwilioCloud, *, end_when: str | None = None) -> CallResult:
    """A Twilio call that presses 0; it ends when the stand-in redirects it, or (with
    ``end_when``) once the agent has said something containing that text."""
    sid = cloud.add_call()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    cloud.on_redirect(sid, lambda: loop.call_soon_threadsafe(stop.set))
    if end_when is not None:
        run.timeline.watch.append(
            (
                lambda e: (
                    e.kind == "transcript"
                    and e.detail.get("role") == "assistant"
                    and end_when in e.detail.get("text", "")
                ),
                stop,
            )
        )
    return await simulate_call(
        run.bridge.base_url,
        silence(0.1),
        public_url=run.bridge.public_url,
        auth_token=run.bridge.auth_token,
        call_sid=sid,
        dtmf=[(0.3, "0")],
        hangup_after_s=PATIENCE_S,  # a safety net: each call ends on an event
        redirected=stop,
    )


def test_transfer_redirects_the_call_with_a_dial_after_the_notice(tmp_path: Path) -> None:
    agent = agent_from(tmp_path, AGENT.format(trigger=SALES), "http://127.0.0.1:9")

    async def main() -> None:
        with TwilioCloud() as cloud:
            async with bridge_with(agent, cloud, cloud.auth_token) as run:
                result = await phone_call(run, cloud)
                [session] = run.local.sessions
                notice = [k for k, v in session.responses.items() if v][-1]
                sent, sent_ms = bytes(session.responses[notice]), session.audio_sent_ms[notice]
            outcomes = dict(run.bridge.services.metrics.ended_by_outcome)
            [update] = cloud.call_updates(result.call_sid)
        assert update.auth_ok and update.status == 200
        assert set(update.form) == {"Twiml"}
        root = ET.fromstring(update.form["Twiml"])
        [dial] = list(root)
        assert root.tag == "Response" and dial.tag == "Dial"
        assert dial.attrib == {"callerId": "+15550199", "timeout": "20"}
        assert [(n.tag, n.text) for n in dial] == [("Number", "+15550100")]
        timeline = run.timeline
        said = timeline.said()
        assert said[-1] == "Transferring you to sales now.", said
        # The notice had been heard to its end (playout drained) before the redirect.
        goodbye_heard_to_the_end(result, notice, sent, sent_ms)
        assert [e.kind for e in result.timeline][-3:] == ["redirected", "stop", "closed"]
        assert timeline.kinds("transfer") == [{"target": "sales"}]
        [closed] = timeline.kinds("closed")
        assert closed["reason"] == "transferred to sales"
        assert outcomes["transferred"] == 1 and outcomes["caller_hung_up"] == 0
        assert result.closed_by == "caller"  # Twilio's stop, as after a real redirect
        assert cloud.calls[result.call_sid]["status"] == "in-progress"

    asyncio.run(main())


def test_sip_target_dials_sip(tmp_path: Path) -> None:
    trigger = 'transfer_call {"target": "support"}'
    agent = agent_from(tmp_path, AGENT.format(trigger=trigger), "http://127.0.0.1:9")

    async def main() -> None:
        with TwilioCloud() as cloud:
            async with bridge_with(agent, cloud, cloud.auth_token) as run:
                result = await phone_call(run, cloud)
            [update] = cloud.call_updates(result.call_sid)
        dial = ET.fromstring(update.form["Twiml"])[0]
        assert [(n.tag, n.text) for n in dial] == [("Sip", "sip:help@example.com")]
        assert run.timeline.kinds("closed")[0]["reason"] == "transferred to support"

    asyncio.run(main())


def check_call_went_on(run: Run, result: CallResult, outcome: str, words: str) -> None:
    records = [d for d in run.timeline.kinds("tool_call") if d["name"] == "transfer_call"]
    assert [r["outcome"] for r in records] == [outcome], records
    errors = [t for t in run.timeline.said() if '"error"' in t]
    assert errors and words in errors[-1], run.timeline.said()
    assert run.timeline.kinds("transferred") == []
    assert run.timeline.kinds("hangup") == []
    [closed] = run.timeline.kinds("closed")
    assert closed["reason"] == "caller hung up"  # our caller ended it, after the error
    assert result.closed_by == "caller"


def test_target_off_the_allow_list_is_an_error_and_the_call_goes_on(tmp_path: Path) -> None:
    trigger = 'transfer_call {"target": "+15559999999"}'
    agent = agent_from(tmp_path, AGENT.format(trigger=trigger), "http://127.0.0.1:9")

    async def main() -> None:
        with TwilioCloud() as cloud:
            async with bridge_with(agent, cloud, cloud.auth_token) as run:
                result = await phone_call(run, cloud, end_when="error")
            assert cloud.requests == []  # nothing reached Twilio
        check_call_went_on(run, result, "refused", "not on the allow-list")
        assert "Transferring you to sales now." not in run.timeline.said()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("fault", "outcome", "words"),
    [("500", "http_500", "HTTP 500"), ("401", "http_401", "refused")],
)
def test_rest_failure_is_an_error_and_the_call_goes_on(
    tmp_path: Path, fault: str, outcome: str, words: str
) -> None:
    agent = agent_from(tmp_path, AGENT.format(trigger=SALES), "http://127.0.0.1:9")

    async def main() -> None:
        with TwilioCloud() as cloud:
            token = cloud.auth_token if fault == "500" else "not-the-token"
            if fault == "500":
                cloud.fail_next(500)
            async with bridge_with(agent, cloud, token) as run:
                result = await phone_call(run, cloud, end_when="error")
            [update] = cloud.call_updates(result.call_sid)
            assert update.status == int(fault)
            assert cloud.calls[result.call_sid]["status"] == "in-progress"
        check_call_went_on(run, result, outcome, words)
        assert "Transferring you to sales now." in run.timeline.said()  # said, then failed
        assert "not-the-token" not in json.dumps(run.timeline.said())

    asyncio.run(main())


def test_softphone_leg_gets_not_available(tmp_path: Path) -> None:
    body = AGENT.format(trigger=SALES).replace("dtmf_0", "utterance")
    agent = agent_from(tmp_path, body, "http://127.0.0.1:9")

    async def main() -> None:
        with TwilioCloud() as cloud:
            async with bridge_with(agent, cloud, cloud.auth_token) as run:
                said = asyncio.Event()
                run.timeline.watch.append(
                    (
                        lambda e: (
                            e.kind == "transcript"
                            and "not available on this leg" in e.detail.get("text", "")
                        ),
                        said,
                    )
                )
                browser = FakeBrowser(24000)
                await browser.connect(run.bridge.base_url)
                assert await browser.call("text", {"data": "Sales, please."}) == {"ok": True}
                await asyncio.wait_for(said.wait(), PATIENCE_S)
                await browser.close()
            assert cloud.requests == []
        records = [d for d in run.timeline.kinds("tool_call") if d["name"] == "transfer_call"]
        assert [r["outcome"] for r in records] == ["refused"]
        assert run.timeline.kinds("transferred") == []

    asyncio.run(main())
