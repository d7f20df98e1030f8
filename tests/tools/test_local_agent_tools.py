"""The local agent's function calling, sans-I/O: strict like the service."""

from __future__ import annotations

from typing import Any

from bridge.local_agent.session import AgentSession

TOOL = {"type": "function", "name": "lookup", "description": "d", "parameters": {"type": "object"}}
TRIGGER = '\n[local-agent trigger] dtmf_7 -> lookup {"order_id": "A-1001"}'


def update(session: AgentSession, **fields: Any) -> list[dict[str, Any]]:
    event = {"type": "session.update", "session": {"type": "realtime", **fields}}
    return session.receive(event, 0.0)


def test_tools_are_checked_strictly() -> None:
    session = AgentSession(now=0.0)
    [ok] = update(session, tools=[TOOL], tool_choice="auto")
    assert ok["type"] == "session.updated"
    for bad in ({**TOOL, "strict": True}, {**TOOL, "type": "web"}, {**TOOL, "name": "a b"}):
        [error] = update(session, tools=[bad])
        assert error["type"] == "error", bad
    [error] = update(session, tool_choice="sometimes")
    assert error["error"]["param"] == "session.tool_choice"


def test_a_trigger_calls_the_tool_and_its_output_is_spoken() -> None:
    session = AgentSession(now=0.0)
    update(session, tools=[TOOL], instructions="Be brief." + TRIGGER)
    text = {"type": "input_text", "text": "The caller pressed 7 on the keypad."}
    item = {"type": "message", "role": "user", "content": [text]}
    session.receive({"type": "conversation.item.create", "item": item}, 0.0)
    out = session.receive({"type": "response.create"}, 0.0)
    kinds = [e["type"] for e in out]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    done = out[4]
    assert done["arguments"] == '{"order_id": "A-1001"}'
    assert out[-1]["response"]["output"][0]["name"] == "lookup"
    # An answer to a call that does not exist is refused; to this one, accepted and spoken.
    stray = {"type": "function_call_output", "call_id": "call_nope", "output": "{}"}
    [error] = session.receive({"type": "conversation.item.create", "item": stray}, 0.0)
    assert error["type"] == "error" and error["error"]["param"] == "item.call_id"
    answer = {"type": "function_call_output", "call_id": done["call_id"], "output": '{"s": 1}'}
    session.receive({"type": "conversation.item.create", "item": answer}, 0.0)
    out = session.receive({"type": "response.create"}, 0.0)
    assert out[0]["type"] == "response.created"
    # A second response.create while this one speaks: the service's error.
    [busy] = session.receive({"type": "response.create"}, 0.0)
    assert busy["error"]["code"] == "conversation_already_has_active_response"
    spoken = [e for e in session.poll(100.0) if e["type"].endswith("transcript.done")]
    assert spoken[0]["transcript"] == '{"s": 1}'
