"""Tools and call control over the wire: simulated Twilio caller → bridge → local agent,
with a real tool endpoint on loopback. One call per agent, all at once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.agents import Agent
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.sim.caller import simulate_call
from bridge.sim.result import CallResult
from tests.e2e import best_correlation, fixture, rig, silence
from tests.tools.helpers import ToolServer, agent_from, tool_server, tool_table

SPEAK = "local_tool_triggers = {{ utterance = {trigger!r} }}\n"
QUIET = "greeting = ''\ntools_secret_env = 'TOOLS_SECRET'\n"


def utterance() -> np.ndarray:
    """Half a second of quiet, then 1.2 s of speech (one caller turn)."""
    return np.concatenate([silence(0.5), fixture("speech-8k.wav")[: 8000 * 6 // 5]])


class Calls:
    """One rig, several agents (one called number each), the timeline of every call."""

    def __init__(self) -> None:
        self.events: dict[str, list[CallEvent]] = defaultdict(list)

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        self.events[call.call_sid].extend(events)

    def kinds(self, sid: str, kind: str) -> list[dict[str, Any]]:
        return [e.detail for e in self.events[sid] if e.kind == kind]

    def said(self, sid: str) -> list[str]:
        return [d["text"] for d in self.kinds(sid, "transcript") if d.get("role") == "assistant"]


async def run_calls(
    agents: list[Agent], plans: list[dict[str, Any]]
) -> tuple[Calls, list[CallResult]]:
    """Call each agent with its plan (``simulate_call`` keywords), all at once."""
    numbered = [
        replace(a, name=f"a{i}", numbers=(f"+1555999{i:04d}",)) for i, a in enumerate(agents)
    ]
    calls = Calls()
    async with rig(Settings(agents=tuple(numbered), default_agent="a0")) as r:
        r.bridge.services.observers.append(calls.observe)
        results = await asyncio.gather(
            *[
                simulate_call(
                    r.bridge.base_url,
                    plan.pop("audio", utterance()),
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    to=agent.numbers[0],
                    call_sid=f"CA{i:032x}",
                    **plan,
                )
                for i, (agent, plan) in enumerate(zip(numbered, plans, strict=True))
            ]
        )
        errors = [e for s in r.agent.sessions for e in s.errors]
    assert errors == [], errors  # the strict agent rejected nothing we sent
    return calls, list(results)


def test_tool_called_signed_validated_and_spoken(tmp_path: Path) -> None:
    async def main() -> None:
        async with tool_server() as tools:
            agent = agent_from(
                tmp_path,
                QUIET
                + "tool_filler_after_ms = 0\n"
                + SPEAK.format(trigger='lookup_order {"order_id": "A-1001"}')
                + tool_table("lookup_order", "lookup_order"),
                tools.base_url,
            )
            calls, [result] = await run_calls([agent], [{"tail_s": 4.0}])
            check_lookup(tools, calls, result)

    asyncio.run(main())


def check_lookup(tools: ToolServer, calls: Calls, result: CallResult) -> None:
    [request] = tools.received
    assert request.signed and request.path == "/lookup_order"
    assert request.body["tool"] == "lookup_order"
    assert request.body["arguments"] == {"order_id": "A-1001"}
    assert request.body["call"]["sid"] == result.call_sid
    assert request.body["call"]["agent"] == "a0"
    assert request.body["call"]["from"] != "+15550001111"  # masked by default
    [record] = calls.kinds(result.call_sid, "tool_call")
    assert record["outcome"] == "ok" and record["name"] == "lookup_order"
    spoken = [t for t in calls.said(result.call_sid) if "shipped" in t]
    assert spoken, calls.said(result.call_sid)
    assert result.closed_by == "caller"  # the tool never ended the call
    assert max(result.played_ms.values(), default=0) > 500  # the answer was played


def test_slow_tool_is_covered_by_the_filler_and_still_answered(tmp_path: Path) -> None:
    async def main() -> None:
        async with tool_server() as tools:
            agent = agent_from(
                tmp_path,
                QUIET
                + "tool_filler_after_ms = 300\ntool_filler = 'One moment please.'\n"
                + SPEAK.format(trigger='slow_lookup {"order_id": "A-1001"}')
                + tool_table("slow_lookup", "slow"),
                tools.base_url,
            )
            calls, [result] = await run_calls([agent], [{"tail_s": 7.0}])
        sid = result.call_sid
        said = calls.said(sid)
        assert "One moment please." in said, said
        answer = [i for i, t in enumerate(said) if "done slowly" in t]
        assert answer and answer[0] > said.index("One moment please."), said
        assert len(tools.received) == 1  # executed once
        assert result.closed_by == "caller"

    asyncio.run(main())


def goodbye_heard_to_the_end(
    result: CallResult, item: str, sent_pcm24: bytes, sent_ms: float
) -> None:
    """The goodbye the agent sent is in what the caller heard, all of it."""
    pcm = np.frombuffer(sent_pcm24, dtype="<i2").astype(np.float64)
    pcm8 = pcm[: len(pcm) // 3 * 3].reshape(-1, 3).mean(axis=1)  # crude 24 k → 8 k
    score, at = best_correlation(pcm8, result.heard.astype(np.float64))
    assert score > 0.9, score
    assert at + len(pcm8) <= len(result.heard)
    assert result.played_ms.get(item, 0.0) >= sent_ms - 20  # played to its last frame


def test_end_call_after_the_goodbye_is_heard(tmp_path: Path) -> None:
    async def main() -> None:
        async with tool_server() as tools:
            agent = agent_from(
                tmp_path,
                QUIET + "end_call = true\n" + SPEAK.format(trigger="end_call"),
                tools.base_url,
            )
            async with rig(Settings(agents=(agent,), default_agent="test")) as r:
                calls = Calls()
                r.bridge.services.observers.append(calls.observe)
                result = await simulate_call(
                    r.bridge.base_url,
                    utterance(),
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    hangup_after_s=30.0,
                )
                [session] = r.agent.sessions
                goodbye = [k for k, v in session.responses.items() if v]
                assert goodbye, "the agent said nothing"
                item = goodbye[-1]
                sent, sent_ms = bytes(session.responses[item]), session.audio_sent_ms[item]
        assert result.closed_by == "bridge"
        assert "Thank you for calling. Goodbye!" in calls.said(result.call_sid)
        [hangup] = calls.kinds(result.call_sid, "hangup")
        assert hangup["reason"] == "end_call"
        goodbye_heard_to_the_end(result, item, sent, sent_ms)

    asyncio.run(main())


def test_silent_caller_is_nudged_twice_then_hung_up_on(tmp_path: Path) -> None:
    async def main() -> None:
        async with tool_server() as tools:
            agent = agent_from(
                tmp_path,
                "greeting = 'Hello.'\nsilence_timeout_s = 0.6\nsilence_max_nudges = 2\n"
                "silence_prompt = 'Are you still there?'\nsilence_goodbye = 'Goodbye then.'\n",
                tools.base_url,
            )
            calls, [result] = await run_calls(
                [agent], [{"audio": silence(0.1), "hangup_after_s": 40.0}]
            )
        said = calls.said(result.call_sid)
        assert said.count("Are you still there?") == 2, said
        assert said[-1] == "Goodbye then.", said
        assert [d["nudges"] for d in calls.kinds(result.call_sid, "silence")] == [1, 2, 3]
        assert result.closed_by == "bridge"

    asyncio.run(main())


def test_dtmf_digits_reach_the_model_and_the_transcript(tmp_path: Path) -> None:
    async def main() -> None:
        async with tool_server() as tools:
            on = agent_from(tmp_path, QUIET + "dtmf_pause_ms = 400\n", tools.base_url)
            off = replace(on, dtmf=False)
            keys = [(1.0, "1"), (1.1, "2"), (1.2, "3"), (1.3, "#"), (2.0, "4"), (2.1, "5")]
            plans: list[dict[str, Any]] = [
                {"audio": silence(0.1), "dtmf": keys, "hangup_after_s": 5.0} for _ in range(2)
            ]
            calls, results = await run_calls([on, off], plans)
        sid_on, sid_off = results[0].call_sid, results[1].call_sid
        typed = [d["text"] for d in calls.kinds(sid_on, "user_text")]
        assert typed == [
            "The caller pressed 1 2 3 on the keypad.",
            "The caller pressed 4 5 on the keypad.",
        ]
        assert [d["digits"] for d in calls.kinds(sid_on, "dtmf_input")] == ["123", "45"]
        assert calls.kinds(sid_off, "user_text") == []
        assert len(calls.kinds(sid_off, "dtmf")) == 6  # still on the timeline

    asyncio.run(main())


BAD = [
    ("hangs", "hang", 'hanging {"order_id": "A-1001"}', "timeout"),
    ("500", "fail", 'failing {"order_id": "A-1001"}', "http_500"),
    ("non-JSON answer", "notjson", 'notjson {"order_id": "A-1001"}', "bad_json"),
    ("10 MB answer", "huge", 'huge {"order_id": "A-1001"}', "too_large"),
    ("unknown tool", "fail", 'no_such_tool {"order_id": "A-1001"}', "refused"),
    ("arguments not JSON", "fail", "hanging {order_id: A-1001", "refused"),
    ("arguments off the schema", "fail", 'hanging {"order_id": "nope"}', "refused"),
]


def test_bad_tool_input_never_ends_the_call(tmp_path: Path) -> None:
    async def main() -> None:
        async with tool_server() as tools:
            agents = []
            for i, (_, path, trigger, _) in enumerate(BAD):
                (tmp_path / str(i)).mkdir()
                name = trigger.split(" ", 1)[0]
                name = name if name != "no_such_tool" else "failing"
                agents.append(
                    agent_from(
                        tmp_path / str(i),
                        QUIET
                        + "tool_filler_after_ms = 0\n"
                        + SPEAK.format(trigger=trigger)
                        + tool_table(name, path, timeout=0.8),
                        tools.base_url,
                    )
                )
            plans: list[dict[str, Any]] = [{"tail_s": 5.0} for _ in BAD]
            calls, results = await run_calls(agents, plans)
        for (what, _, _, outcome), result in zip(BAD, results, strict=True):
            sid = result.call_sid
            records = calls.kinds(sid, "tool_call")
            assert [r["outcome"] for r in records] == [outcome], (what, records)
            assert any('"error"' in t for t in calls.said(sid)), (what, calls.said(sid))
            assert result.closed_by == "caller", what  # the call went on to its end
            assert calls.kinds(sid, "hangup") == [], what


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_the_caller_can_talk_over_the_filler_and_still_gets_the_result(tmp_path: Path) -> None:
    filler = "Please hold on while I look that up for you, it will only take a moment now."
    speech = fixture("speech-8k.wav")[: 8000 * 6 // 5]
    # One turn, then another while the (long) filler plays.
    audio = np.concatenate([silence(0.5), speech, silence(1.3), speech])

    async def main() -> None:
        async with tool_server() as tools:
            agent = agent_from(
                tmp_path,
                QUIET
                + f"tool_filler_after_ms = 200\ntool_filler = {filler!r}\n"
                + SPEAK.format(trigger='slow_lookup {"order_id": "A-1001"}')
                + tool_table("slow_lookup", "slow"),
                tools.base_url,
            )
            calls, [result] = await run_calls([agent], [{"audio": audio, "tail_s": 4.0}])
        sid = result.call_sid
        items = {
            d["item_id"]: d["text"] for d in calls.kinds(sid, "transcript") if d.get("item_id")
        }
        # A cut item's transcript is what had been said of it.
        cut = [
            d
            for d in calls.kinds(sid, "barge_in")
            if d["item_id"] in items and filler.startswith(items[d["item_id"]])
        ]
        assert cut, calls.kinds(sid, "barge_in")  # the caller talked over the filler
        first = calls.kinds(sid, "tool_started")[0]["call_id"]
        done = [d for d in calls.kinds(sid, "tool_call") if d["call_id"] == first]
        assert [d["outcome"] for d in done] == ["ok"]
        assert any("done slowly" in t for t in calls.said(sid))  # the late result, spoken
        assert result.closed_by == "caller"

    asyncio.run(main())
