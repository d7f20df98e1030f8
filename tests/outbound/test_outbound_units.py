"""The sans-I/O parts: numbers, the AMD answer, the clock check, the agents-file key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.agents import Agent, load_agents
from bridge.errors import ConfigError
from bridge.ops.doctor import _Dates, check_clock
from bridge.outbound.amd import classify, token_subject
from bridge.outbound.place import BadTarget, check_number


@pytest.mark.parametrize("good", ["+15551234567", "sip:alice@example.sip.twilio.com"])
def test_good_targets(good: str) -> None:
    assert check_number(f" {good} ", "to", sip=True) == good


@pytest.mark.parametrize("bad", ["5551234567", "+0123", "+1555abc4567", "sip:nohost", ""])
def test_bad_targets(bad: str) -> None:
    with pytest.raises(BadTarget, match=r"E\.164"):
        check_number(bad, "to", sip=True)
    with pytest.raises(BadTarget):
        check_number("sip:alice@example.com", "from", sip=False)


@pytest.mark.parametrize(
    ("answered_by", "answer"),
    [
        ("machine_end_beep", "machine"),
        ("machine_end_silence", "machine"),
        ("machine_end_other", "machine"),
        ("machine_start", "machine"),
        ("human", "human"),
        ("unknown", "unknown"),
        ("", "unknown"),
    ],
)
def test_amd_answers(answered_by: str, answer: str) -> None:
    assert classify(answered_by) == answer


def test_an_outbound_reference_is_used_once_and_inbound_tokens_name_the_call() -> None:
    inbound = {"agent": "a", "token": "t"}
    assert token_subject(inbound, "CA1") == "CA1"
    outbound = {"direction": "outbound", "ref": "out-" + "ab" * 16}
    assert token_subject(outbound, "CA2") == outbound["ref"]
    assert token_subject(outbound, "CA3") is None


def test_clock_skew_warns_beyond_a_few_seconds() -> None:
    dates = _Dates()
    assert check_clock(dates).level == "SKIP"
    dates.seen.append(("Twilio API", 1.0))
    assert check_clock(dates).level == "OK"
    dates.seen.append(("public URL", -42.0))
    check = check_clock(dates)
    assert check.level == "WARN" and "42 s ahead of public URL" in check.detail and check.fix


def test_voicemail_is_an_agent_option(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text('[agents.a]\nvoicemail = "Call us back."\n', encoding="utf-8")
    (agent,), _ = load_agents(path, Agent())
    assert agent.voicemail == "Call us back."
    path.write_text("[agents.a]\nvoicemail = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="voicemail"):
        load_agents(path, Agent())


def test_a_held_greeting_is_said_when_asked_and_only_then() -> None:
    from bridge.call import Call

    call = Call.for_leg(
        agent=Agent(greeting="Hello there."),
        call_sid="CA1",
        codec="mulaw",
        rate=8000,
        lead_ms=160,
        now=0.0,
    )
    call.greet = False  # what bridge.outbound.amd does for a call placed with AMD
    call.model_connected(0.0)
    kinds = [m["type"] for m in call.to_model]
    assert "response.create" not in kinds
    call.to_model.clear()
    call.greet_late()
    [create] = call.to_model
    assert create["type"] == "response.create" and "Hello there." in str(create)
    call.to_model.clear()
    call.greet_late()  # once only
    assert call.to_model == []
