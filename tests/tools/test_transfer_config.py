"""transfer_call's agents-file shape, declaration, checks and TwiML (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.ai.events import session_update
from bridge.call import Call
from bridge.errors import ConfigError
from bridge.tools.control import END_GRACE_S, TRANSFER_STOP_WAIT_S, ToolResult
from bridge.tools.transfer import check, dial_twiml, parse_transfer
from tests.tools.helpers import agent_from

TABLE = """[agents.test.transfer]
targets = { sales = "+15550100", support = "sip:help@example.com" }
"""


def test_agents_file_enables_transfer_call_with_an_enum_of_names(tmp_path: Path) -> None:
    agent = agent_from(tmp_path, "end_call = true\n" + TABLE, "http://127.0.0.1:9")
    assert agent.builtin_tools == ("end_call", "transfer_call")
    assert agent.transfer is not None and agent.transfer.notice == "Transferring you now."
    tools = session_update(agent)["session"]["tools"]
    [transfer] = [t for t in tools if t["name"] == "transfer_call"]
    assert transfer["parameters"]["properties"]["target"]["enum"] == ["sales", "support"]
    assert transfer["parameters"]["required"] == ["target"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({}, "targets"),
        ({"targets": {"sales": "5550100"}}, "E.164"),
        ({"targets": {"a b": "+15550100"}}, "letters"),
        ({"targets": {"s": "+15550100"}, "caller_id": "me"}, "caller_id"),
        ({"targets": {"s": "+15550100"}, "timeout_s": 1}, "timeout_s"),
        ({"targets": {"s": "+15550100"}, "colour": "red"}, "unknown"),
    ],
)
def test_bad_transfer_tables_name_the_key(raw: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_transfer("[agents.x]", raw)


def test_check_and_twiml() -> None:
    config = parse_transfer(
        "x", {"targets": {"sales": "+15550100", "help": "sip:h@example.com"}, "timeout_s": 15}
    )
    assert "allow-list" in str(check(config, {"target": "+15550100"}))
    assert "unknown arguments" in str(check(config, {"target": "sales", "number": "1"}))
    assert "not enabled" in str(check(None, {"target": "sales"}))
    assert check(config, {"target": "sales", "reason": "quote"}) is config
    dial = ET.fromstring(dial_twiml(config, "sales"))[0]
    assert dial.attrib == {"timeout": "15"}  # no callerId: Twilio's default
    assert [(n.tag, n.text) for n in dial] == [("Number", "+15550100")]
    sip = ET.fromstring(dial_twiml(config, "help"))[0]
    assert [(n.tag, n.text) for n in sip] == [("Sip", "sip:h@example.com")]
    with pytest.raises(ValueError):
        dial_twiml(config, "nobody")


def new_call(agent: Agent, *, phone: bool = True) -> Call:
    call = Call.for_leg(agent=agent, call_sid="CA1", codec="mulaw", rate=8000, lead_ms=160, now=0.0)
    call.control.can_transfer = phone
    call.model_connected(0.0)
    call.to_model.clear()
    return call


def transfer_call(call: Call, arguments: str, t: float) -> None:
    call.model_event(rt.ResponseCreated("resp1"), t)
    added = rt.OutputItemAdded("resp1", "item1", None, "function_call", "transfer_call", "c1")
    call.model_event(added, t)
    call.model_event(rt.FunctionCallArguments("resp1", "item1", "c1", arguments), t)
    call.model_event(rt.ResponseDone("resp1", "completed"), t)


def test_the_redirect_waits_for_the_notice_and_a_failure_goes_back_to_the_model(
    tmp_path: Path,
) -> None:
    agent = agent_from(tmp_path, TABLE, "http://127.0.0.1:9")
    call = new_call(agent)
    transfer_call(call, '{"target": "sales"}', 0.1)
    [create] = call.to_model
    assert create["type"] == "response.create"
    assert create["response"]["instructions"].endswith("Transferring you now.")
    assert call.control.transfers == []  # the notice has not been said yet
    call.model_event(rt.ResponseCreated("resp2"), 0.2)
    assert call.control.transfers == []
    call.model_event(rt.ResponseDone("resp2", "completed"), 0.3)
    call.tick(0.4)
    [transfer] = call.control.transfers  # nothing left to play: redirect now
    assert transfer.target == "sales" and "<Number>+15550100</Number>" in transfer.twiml
    # Twilio may stop our stream before the redirect's answer reaches us: that is the transfer.
    assert call.control.transfer_target == "sales"
    call.control.transfers.clear()
    call.to_model.clear()
    failed = ToolResult("c1", "transfer_call", '{"error": "HTTP 500"}', "http_500", 0.1)
    call.tool_result(failed, 0.5)
    assert call.control.transferred_to is None and call.control.transfer_target is None
    assert [e["item"]["output"] for e in call.to_model if "item" in e] == ['{"error": "HTTP 500"}']
    assert call.hangup is None


def test_success_marks_the_call_transferred_and_no_output_is_sent(tmp_path: Path) -> None:
    agent = agent_from(tmp_path, TABLE, "http://127.0.0.1:9")
    call = new_call(agent)
    transfer_call(call, '{"target": "support"}', 0.1)
    call.model_event(rt.ResponseCreated("resp2"), 0.2)
    call.model_event(rt.ResponseDone("resp2", "completed"), 0.3)
    call.tick(0.4)
    [transfer] = call.control.transfers
    assert "<Sip>sip:help@example.com</Sip>" in transfer.twiml
    call.to_model.clear()
    call.tool_result(ToolResult("c1", "transfer_call", "{}", "ok", 0.1), 0.5)
    assert call.control.transferred_to == "support"
    assert call.to_model == []
    # Twilio's ``stop`` normally ends the leg; without one the bridge closes it itself.
    assert call.control.next_due(0.6) == 0.5 + TRANSFER_STOP_WAIT_S
    call.tick(0.5 + TRANSFER_STOP_WAIT_S - 0.01)
    assert call.hangup is None
    call.tick(0.5 + TRANSFER_STOP_WAIT_S)
    assert call.hangup == "transferred to support"


def test_not_on_this_leg_and_not_on_the_list(tmp_path: Path) -> None:
    agent = agent_from(tmp_path, TABLE, "http://127.0.0.1:9")
    for phone, arguments, words in [
        (False, '{"target": "sales"}', "not available on this leg"),
        (True, '{"target": "+15550100"}', "allow-list"),
    ]:
        call = new_call(agent, phone=phone)
        transfer_call(call, arguments, 0.1)
        outputs = [e["item"]["output"] for e in call.to_model if "item" in e]
        assert len(outputs) == 1 and words in outputs[0]
        assert call.control.transfers == [] and call.control.transferred_to is None


def test_a_notice_that_never_finishes_playing_does_not_hold_the_transfer(tmp_path: Path) -> None:
    agent = agent_from(tmp_path, TABLE, "http://127.0.0.1:9")
    call = new_call(agent)
    transfer_call(call, '{"target": "sales"}', 0.1)
    call.model_event(rt.ResponseCreated("resp2"), 0.2)  # the notice's response never ends
    call.tick(1.0)
    assert call.control.transfers == []
    due = call.control.next_due(1.0)
    assert due is not None and due <= 0.1 + END_GRACE_S
    call.tick(0.1 + END_GRACE_S)
    assert [t.target for t in call.control.transfers] == ["sales"]
