"""Call control, sans-I/O: the Call with tools, fed model events by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.agents import Agent, load_agents
from bridge.ai import events as rt
from bridge.call import Call
from bridge.errors import ConfigError
from bridge.playout import SendMark
from bridge.tools.control import RunTool, ToolResult
from bridge.tools.keypad import Silence
from bridge.tools.signing import sign, verify
from tests.tools.helpers import SECRET, agent_from, tool_table


def new_call(agent: Agent) -> Call:
    call = Call.for_leg(agent=agent, call_sid="CA1", codec="mulaw", rate=8000, lead_ms=160, now=0.0)
    call.model_connected(0.0)
    call.to_model.clear()
    return call


def function_call(call: Call, call_id: str, name: str, arguments: str, t: float) -> None:
    call.model_event(rt.ResponseCreated("resp1"), t)
    call.model_event(rt.OutputItemAdded("resp1", "item1", None, "function_call", name, call_id), t)
    call.model_event(rt.FunctionCallArguments("resp1", "item1", call_id, arguments), t)


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return agent_from(
        tmp_path,
        "tools_secret_env = 'TOOLS_SECRET'\ntool_filler_after_ms = 0\n" + tool_table("lookup", "x"),
        "http://127.0.0.1:9",
    )


def test_the_output_waits_for_response_done_and_each_call_id_runs_once(agent: Agent) -> None:
    call = new_call(agent)
    function_call(call, "call_1", "lookup", '{"order_id": "A-1001"}', 0.1)
    [run] = call.control.to_tools
    assert isinstance(run, RunTool) and run.arguments == {"order_id": "A-1001"}
    call.control.to_tools.clear()
    # The same call again (a replayed or cancelled response): not executed twice.
    call.model_event(rt.FunctionCallArguments("resp1", "item1", "call_1", "{}"), 0.2)
    assert call.control.to_tools == []
    call.tool_result(ToolResult("call_1", "lookup", '{"ok": true}', "ok", 0.3), 0.3)
    assert call.to_model == []  # resp1 is still active
    call.model_event(rt.ResponseDone("resp1", "completed"), 0.4)
    kinds = [(e["type"], e.get("item", {}).get("type")) for e in call.to_model]
    assert kinds == [
        ("conversation.item.create", "function_call_output"),
        ("response.create", None),
    ]


@pytest.mark.parametrize("created_first", [True, False], ids=["as-on-the-wire", "error-first"])
def test_a_response_race_is_retried_after_the_next_response_done(
    agent: Agent, created_first: bool
) -> None:
    call = new_call(agent)
    function_call(call, "call_1", "lookup", "not json", 0.1)
    call.model_event(rt.ResponseDone("resp1", "completed"), 0.2)
    create = call.to_model[-1]
    output = json.loads(call.to_model[0]["item"]["output"])
    assert "error" in output
    call.to_model.clear()
    # The server started resp2 itself just as our response.create left: on the wire its
    # response.created comes before the error that refuses ours.
    race = rt.ServerError("invalid_request_error", rt.ACTIVE_RESPONSE, "busy", create["event_id"])
    events: list[rt.ServerEvent] = [rt.ResponseCreated("resp2"), race]
    for event in events if created_first else events[::-1]:
        call.model_event(event, 0.3)
    assert call.to_model == []
    assert [e.detail["category"] for e in call.events if e.kind == "model_error"] == ["race"]
    call.model_event(rt.ResponseDone("resp2", "completed"), 0.5)
    assert [e["type"] for e in call.to_model] == ["response.create"]


def test_a_goodbye_that_lost_a_race_is_asked_for_again_as_it_was(agent: Agent) -> None:
    call = new_call(agent)
    call.control.end("caller silent", 0.1, "Goodbye for now.")
    call.tick(0.1)
    (goodbye,) = [e for e in call.to_model if e["type"] == "response.create"]
    assert "Goodbye for now." in goodbye["response"]["instructions"]
    call.to_model.clear()
    race = rt.ServerError("invalid_request_error", rt.ACTIVE_RESPONSE, "busy", goodbye["event_id"])
    call.model_event(rt.ResponseCreated("resp_server"), 0.2)  # the caller spoke: it answers
    call.model_event(race, 0.2)
    call.tick(0.3)
    assert call.to_model == [] and call.hangup is None  # waits for the server's response
    call.model_event(rt.ResponseDone("resp_server", "completed"), 0.4)
    call.tick(0.4)
    (again,) = call.to_model
    assert again["response"] == goodbye["response"]  # the goodbye, not a bare response
    assert again["event_id"] != goodbye["event_id"]


def test_end_call_waits_for_the_goodbye_to_play_out(tmp_path: Path) -> None:
    agent = agent_from(tmp_path, "end_call = true\n", "http://127.0.0.1:9")
    call = new_call(agent)
    call.model_event(rt.ResponseCreated("resp1"), 0.1)
    call.model_event(rt.OutputItemAdded("resp1", "msg1", "assistant", "message"), 0.1)
    call.model_event(rt.AudioDelta("resp1", "msg1", 0, b"\x00\x10" * 24000), 0.1)  # 1 s
    call.model_event(rt.AudioDone("resp1", "msg1", 0), 0.1)
    call.model_event(
        rt.OutputItemAdded("resp1", "fc1", None, "function_call", "end_call", "c1"), 0.1
    )
    call.model_event(rt.FunctionCallArguments("resp1", "fc1", "c1", "{}"), 0.1)
    call.model_event(rt.ResponseDone("resp1", "completed"), 0.2)
    assert call.hangup is None  # the goodbye is still playing
    assert not any(e["type"] == "response.create" for e in call.to_model)  # it said goodbye
    marks: list[str] = []
    t = 0.2
    while t < 5 and (marks or call.playout.active):  # a far end echoing one mark a tick
        t += 0.02
        call.tick(t)
        marks += [o.name for o in call.to_phone if isinstance(o, SendMark)]
        call.to_phone.clear()
        if marks:
            assert call.hangup is None  # not before the last mark is echoed
            call.phone_mark(marks.pop(0), t)
    assert call.hangup == "end_call"


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    body = b'{"tool":"x"}'
    header = sign(SECRET, body, 1_000_000)
    assert verify(SECRET, body, header, 1_000_100)
    assert not verify(SECRET, body + b" ", header, 1_000_100)
    assert not verify("other", body, header, 1_000_100)
    assert not verify(SECRET, body, header, 1_000_000 + 301)  # too old: a replay
    assert not verify(SECRET, body, "v1=abc", 1_000_000)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tools_secret_env = 'NOPE'\n", "not set"),
        (tool_table("lookup", "x").replace("TOOLS_BASE_URL", "UNSET_VAR"), "UNSET_VAR"),
        ("local_tool_triggers = { sneeze = 'x' }\n", "not a trigger"),
        ("[[agents.test.tools]]\nname = 'bad name'\nurl = 'http://x'\n", "name"),
        ("[[agents.test.tools]]\nname = 'a'\nurl = 'ftp://x'\n", "url"),
        (
            "[[agents.test.tools]]\nname = 'a'\nurl = 'http://x'\n"
            "parameters = { type = 'object', properties = 3 }\n",
            "JSON Schema",
        ),
        ("[[agents.test.tools]]\nname = 'end_call'\nurl = 'http://x'\n", "built-in"),
    ],
)
def test_bad_tool_declarations_are_refused_at_load(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "agents.toml"
    secret = "" if "tools_secret_env" in body else "tools_secret_env = 'TOOLS_SECRET'\n"
    path.write_text("[agents.test]\n" + secret + body, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_agents(path, Agent(), {"TOOLS_SECRET": "s", "TOOLS_BASE_URL": "http://h"})


def test_the_shipped_example_loads_and_declares_its_tools() -> None:
    env = {"TOOLS_SECRET": "s", "TOOLS_BASE_URL": "http://127.0.0.1:8099"}
    path = Path(__file__).resolve().parents[2] / "examples" / "agents.toml"
    [agent], _ = load_agents(path, Agent(), env)
    session: dict[str, Any] = rt.session_update(agent)["session"]
    assert [t["name"] for t in session["tools"]] == ["lookup_order", "end_call", "transfer_call"]
    assert session["tool_choice"] == "auto"
    assert "secret" not in repr(agent).lower() or "tools_secret=" not in repr(agent)


def test_a_result_for_a_lost_session_reaches_the_next_one_as_text(agent: Agent) -> None:
    call = new_call(agent)
    function_call(call, "call_1", "lookup", '{"order_id": "A-1001"}', 0.1)
    call.model_event(rt.ResponseDone("resp1", "completed"), 0.2)
    call.model_lost(0.3, "dropped")
    call.model_connected(0.4)
    call.to_model.clear()
    call.tool_result(ToolResult("call_1", "lookup", '{"ok": true}', "ok", 0.5), 0.5)
    item = call.to_model[0]["item"]
    assert item["type"] == "message" and '{"ok": true}' in item["content"][0]["text"]
    assert call.to_model[-1]["type"] == "response.create"


def test_silence_is_due_when_its_due_time_says():
    # Near t = 10 s, (t + 1.2) - t < 1.2 in floating point: the check must be the sum
    # ``due`` names, or a tick at that time finds nothing due and a pacer spins.
    silence = Silence(Agent(silence_timeout_s=1.2))
    assert not silence.quiet(10.0)
    due = silence.due
    assert due is not None
    assert silence.quiet(due)
