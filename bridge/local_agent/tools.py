"""Function calling in the local agent: checks, triggers, and what a response does. Pure.

Owns the rules ``session.tools`` / ``tool_choice`` must pass (the service's shape: each tool
``{type: "function", name, description, parameters}``, nothing else), the check of a
``function_call_output`` item (its ``call_id`` must name a function call in the
conversation), and how the local agent decides to call a tool, since it understands no
speech:

- Triggers come from the session instructions, one line each:
  ``[local-agent trigger] utterance -> lookup_order {"order_id": "A-1001"}`` (the text after
  the tool name is sent as the arguments, verbatim, so it may even be broken JSON).
  ``utterance``: any caller turn (speech, or typed text that is not keypad digits);
  ``dtmf_<digits>``: the user message "The caller pressed <digits> on the keypad."
- A response that follows a ``function_call_output`` speaks that output.
- A ``response.create`` whose instructions start with "Say exactly this, and nothing else: "
  speaks what follows. Speech is synthetic: one tone burst per word, 24 kHz PCM16.

The events of a function-call response are the service's: ``response.created``,
``response.output_item.added`` (a ``function_call`` item), ``conversation.item.added``,
``response.function_call_arguments.delta`` / ``.done``, ``conversation.item.done``,
``response.output_item.done``, ``response.done`` with the item in its ``output``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.local_agent.checks import Problem, invalid_type
from bridge.local_agent.conversation import Emit, Item

SAY = "Say exactly this, and nothing else: "
TRIGGER_LINE = re.compile(r"^\[local-agent trigger\] (\S+) -> (\S+)(?: (.*))?$", re.MULTILINE)
_KEYPAD = re.compile(r"^The caller pressed ([0-9*# ]+) on the keypad\.$")
_TOOL_KEYS = {"type", "name", "description", "parameters"}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class CallTool:
    name: str
    arguments: str


Plan = Say | CallTool | None


def check_tools(session: dict[str, Any]) -> Problem | None:
    tools = session.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return invalid_type("session.tools", "array", tools)
        for i, tool in enumerate(tools):
            where = f"session.tools[{i}]"
            if not isinstance(tool, dict):
                return invalid_type(where, "object", tool)
            for key in tool:
                if key not in _TOOL_KEYS:
                    return Problem(
                        "unknown_parameter",
                        f"Unknown parameter: '{where}.{key}'.",
                        f"{where}.{key}",
                    )
            if tool.get("type") != "function":
                return Problem("invalid_value", f"Invalid '{where}.type'.", f"{where}.type")
            if not isinstance(tool.get("name"), str) or not _NAME.fullmatch(tool["name"]):
                return Problem("invalid_value", f"Invalid '{where}.name'.", f"{where}.name")
            if not isinstance(tool.get("parameters", {}), dict):
                return invalid_type(f"{where}.parameters", "object", tool["parameters"])
    choice = session.get("tool_choice")
    named = isinstance(choice, dict) and choice.get("type") == "function"
    if choice is not None and choice not in ("auto", "none", "required") and not named:
        return Problem("invalid_value", "Invalid 'session.tool_choice'.", "session.tool_choice")
    return None


def check_output_item(raw: dict[str, Any], items: dict[str, Item]) -> Problem | None:
    """A ``function_call_output`` must answer a function call of this conversation."""
    call_id, output = raw.get("call_id"), raw.get("output")
    if not isinstance(call_id, str):
        return Problem("missing_required_parameter", "Missing 'item.call_id'.", "item.call_id")
    if not isinstance(output, str):
        return invalid_type("item.output", "string", output)
    for item in items.values():
        wire = item.raw or {}
        if wire.get("type") == "function_call" and wire.get("call_id") == call_id:
            return None
    return Problem(
        "invalid_value", f"Tool call ID '{call_id}' not found in conversation.", "item.call_id"
    )


def plan_response(
    instructions: str, params: dict[str, Any], last: Item | None, answered: set[str]
) -> Plan:
    """What the next response does (None: echo or greet, as without tools). The item a
    tool call or a spoken output answers goes into ``answered``."""
    wanted = params.get("instructions")
    if isinstance(wanted, str) and wanted.startswith(SAY):
        return Say(wanted.removeprefix(SAY))
    if last is None or last.id in answered:
        return None
    raw = last.raw or {}
    if raw.get("type") == "function_call_output":
        answered.add(last.id)
        return Say(str(raw.get("output", "")))
    triggers = {
        m.group(1): (m.group(2), m.group(3) or "{}") for m in TRIGGER_LINE.finditer(instructions)
    }
    key = "utterance" if last.role == "user" else None
    if raw.get("type") == "message" and last.role == "user":
        texts = [c.get("text", "") for c in raw.get("content", []) if isinstance(c, dict)]
        keypad = _KEYPAD.match(" ".join(texts).strip())
        if keypad:
            key = "dtmf_" + keypad.group(1).replace(" ", "")
    if key in triggers:
        name, arguments = triggers[key]
        answered.add(last.id)
        return CallTool(name, arguments)
    return None


def function_call_events(
    emit: Emit, response: dict[str, Any], item: dict[str, Any], previous: str | None
) -> list[dict[str, Any]]:
    """The whole of a response that calls one tool (``item`` is its finished item)."""
    where = {"response_id": response["id"], "item_id": item["id"], "output_index": 0}
    started = {**item, "status": "in_progress", "arguments": ""}
    return [
        emit("response.created", response={**response, "status": "in_progress", "output": []}),
        emit(
            "response.output_item.added", response_id=response["id"], output_index=0, item=started
        ),
        emit("conversation.item.added", previous_item_id=previous, item=started),
        emit(
            "response.function_call_arguments.delta",
            **where,
            call_id=item["call_id"],
            delta=item["arguments"],
        ),
        emit(
            "response.function_call_arguments.done",
            **where,
            call_id=item["call_id"],
            name=item["name"],
            arguments=item["arguments"],
        ),
        emit("conversation.item.done", previous_item_id=previous, item=item),
        emit("response.output_item.done", response_id=response["id"], output_index=0, item=item),
        emit("response.done", response={**response, "status": "completed", "output": [item]}),
    ]


def speak(text: str) -> bytes:
    """Synthetic speech for ``text``: a 180 ms tone burst per word, 60 ms apart (PCM16 24 kHz)."""
    t = np.arange(int(0.18 * 24000)) / 24000
    envelope = np.sin(np.pi * t / t[-1]) if len(t) > 1 else t
    gap = np.zeros(int(0.06 * 24000))
    parts: list[np.ndarray] = []
    for word in text.split() or ["..."]:
        pitch = 220 + (sum(map(ord, word)) % 12) * 40
        parts += [0.3 * envelope * np.sin(2 * np.pi * pitch * t), gap]
    pcm = np.concatenate(parts) * 32767
    return pcm.astype("<i2").tobytes()
