"""Call control for one call, sans-I/O: tool calls, end_call, transfers, keypad, silence.

The ``Call`` owns one :class:`CallControl`, hands it the model's events, keypad digits,
tool results and the time, and moves its outboxes: ``to_model`` (Realtime client events),
``to_tools`` (:class:`RunTool` commands the runner executes beside the call and answers
with a :class:`ToolResult`), ``events`` (timeline entries) and ``user_texts`` (user turns
for the conversation's replay). ``hangup`` says when the call should end.

Rules (https://platform.openai.com/docs/guides/realtime-conversations#function-calling):
a call arrives as ``response.function_call_arguments.done`` (``call_id``, ``arguments``);
its name comes from the ``function_call`` item of ``response.output_item.added``. The
answer is a ``function_call_output`` item and a ``response.create``, sent only while no
response is active (else ``conversation_already_has_active_response``): outputs wait for
``response.done``. A ``call_id`` runs once, whatever happens to its response. Whatever goes
wrong (unknown tool, arguments that are not JSON or do not fit the schema, a failed
endpoint) becomes an error output the model can talk about, never an ended call.

``transfer_call`` (``bridge.tools.transfer``): a target off the allow-list or a leg that
is not a Twilio call gets an error output; else the notice is said and, once heard like a
goodbye, the runner redirects the call (``transfers``) and answers with a ToolResult: "ok"
(``transferred_to``; Twilio's ``stop`` ends our leg) or an error output, and the call goes
on. ``end_call``: the call ends once the goodbye has been generated and played to its end
(playout drained, every mark echoed). A tool still running after ``tool_filler_after_ms``
gets a filler line, out of band, when nothing else is being said. Silence after the
agent's playout ended earns ``silence_prompt``; one more than ``silence_max_nudges``
earns ``silence_goodbye`` and the end of the call. It must not do I/O.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from jsonschema import Draft202012Validator

from bridge.agents import Agent
from bridge.ai import events as rt
from bridge.recent import Recent
from bridge.tools.keypad import Keypad, Silence, keypad_text
from bridge.tools.spec import ToolSpec
from bridge.tools.transfer import NOT_ON_THIS_LEG, Transfer, check, dial_twiml

logger = logging.getLogger(__name__)

# Said by responses the bridge asks for; the local agent speaks what follows it.
SAY = "Say exactly this, and nothing else: "
END_CALL_GOODBYE = "Thank you for calling. Goodbye!"
# An ending whose goodbye never finishes playing (a leg that stops echoing) ends anyway.
END_GRACE_S = 30.0
# Twilio ends our stream with ``stop`` once a redirect took the call; if it does not, the
# bridge closes the leg itself this long after the redirect (the caller is already gone).
TRANSFER_STOP_WAIT_S = 10.0


def say(text: str) -> str:
    """Response instructions to speak ``text`` word for word."""
    return SAY + text


@dataclass(frozen=True)
class RunTool:
    """Run an HTTP tool (the runner's executor does the I/O)."""

    call_id: str
    spec: ToolSpec
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """What a tool run gave: ``output`` (JSON text for the model), how it went, how long."""

    call_id: str
    name: str
    output: str
    outcome: str  # "ok", or why not: "timeout", "http_500", "bad_json", "too_large", …
    seconds: float


class CallState(Protocol):
    """What control reads of the Call."""

    @property
    def response_active(self) -> bool: ...
    @property
    def caller_speaking(self) -> bool: ...
    @property
    def playing(self) -> bool: ...
    @property
    def model_ready(self) -> bool: ...


def error_output(message: str) -> str:
    return json.dumps({"error": message})


class CallControl:
    def __init__(self, agent: Agent, now: float) -> None:
        self.agent = agent
        self.to_model: list[dict[str, Any]] = []
        self.to_tools: list[RunTool] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.user_texts: list[str] = []
        self.hangup: str | None = None  # why the call should end now
        self._tools = {t.name: t for t in agent.tools}
        self._builtins = set(agent.builtin_tools)
        self._names: Recent[str, str] = Recent()  # function_call item id → tool name
        self._seen: Recent[str, None] = Recent()  # call ids already handled
        self._running: dict[str, float] = {}  # call id → started
        self._orphans: set[str] = set()  # running calls an earlier session made
        self._pending: list[dict[str, Any]] = []  # items waiting for no active response
        self._respond = False  # a response.create is owed after the pending items
        self._instructions: str | None = None  # ...with these instructions
        self._requested: set[str] = set()  # event ids of our response.create in flight
        self._asked: Recent[str, dict[str, Any]] = Recent()  # ...and the latest ones sent
        self._retry: dict[str, Any] | None = None  # one that lost a race: sent again, as was
        self._blocked = False  # a response we did not ask for is active: wait for its done
        self._spoke: Recent[str, None] = Recent()  # responses that had an audio message
        self._filler_due: float | None = None
        self._ending: str | None = None
        self._ending_by = now  # when an ending goes on without its goodbye heard
        self.keypad = Keypad(agent)
        self.silence = Silence(agent)
        # transfer_call: the runner says whether the leg can be redirected (a Twilio call)
        # and runs ``transfers``; ``transferred_to`` names the target once Twilio took it.
        self.can_transfer = False
        self.transfers: list[Transfer] = []
        self.transferred_to: str | None = None
        self._transferred_by = 0.0  # when to hang up if Twilio's ``stop`` never comes
        self._transfer: Transfer | None = None  # said its notice, waiting or redirecting
        self._transfer_by = now  # when to redirect even if the notice was not heard

    # ------------------------------------------------------------------ inputs

    def model_event(self, event: rt.ServerEvent, now: float, call: CallState) -> None:
        match event:
            case rt.AudioDelta():
                return  # dozens a second, and nothing to do here
            case rt.OutputItemAdded(type="function_call", item_id=item_id, name=name):
                self._names.put(item_id, name or "")
            case rt.OutputItemAdded(type="message", response_id=response_id):
                self._spoke.add(response_id)
            case rt.FunctionCallArguments():
                self._function_call(event, now)
            case rt.ResponseCreated():
                self._requested.clear()
            case rt.ServerError(event_id=event_id) if self.lost_race(event):
                # Ask again, the same (a goodbye, a filler), after the server's own response.
                self._requested.discard(event_id or "")
                self._retry = self._asked.get(event_id or "")
                self._blocked = True
            case rt.ResponseDone():
                self._blocked = False
            case rt.SpeechStarted() | rt.InputTranscript():
                self.silence.caller_active()
        self.poll(now, call)

    def dtmf(self, digit: str, now: float, call: CallState) -> None:
        self.silence.caller_active()
        digits = self.keypad.press(digit, now)
        if digits:
            self._keypad(digits, now)
        self.poll(now, call)

    def caller_typed(self) -> None:
        self.silence.caller_active()

    def tool_result(self, result: ToolResult, now: float, call: CallState) -> None:
        started = self._running.pop(result.call_id, None)
        if started is None:
            return
        if not self._running:
            self._filler_due = None
        self.events.append(
            (
                "tool_call",
                {
                    "name": result.name,
                    "call_id": result.call_id,
                    "outcome": result.outcome,
                    "latency_ms": round(result.seconds * 1000, 1),
                },
            )
        )
        transfer = self._transfer
        if transfer is not None and transfer.call_id == result.call_id:
            self._transfer = None  # done: redirected, or an error the model hears next
            if result.outcome == "ok":
                self.transferred_to = transfer.target  # Twilio's ``stop`` ends our leg next
                self._transferred_by = now + TRANSFER_STOP_WAIT_S
                self.events.append(("transferred", {"target": transfer.target}))
                return
        self._answer(result.call_id, result.output)
        self.poll(now, call)

    @property
    def transfer_target(self) -> str | None:
        """Where the call went (or is going: the redirect is in flight; Twilio may stop our
        stream before its answer reaches us), else None."""
        if self.transferred_to is not None:
            return self.transferred_to
        transfer = self._transfer
        return transfer.target if transfer and transfer.call_id in self._running else None

    def lost_race(self, error: rt.ServerError) -> bool:
        """``error`` refused a ``response.create`` of ours because the server had just
        started a response itself (its ``response.created`` arrives first, so the request is
        no longer in flight by then)."""
        return error.code == rt.ACTIVE_RESPONSE and error.event_id in self._asked

    def model_lost(self) -> None:
        """The session ended: what it was owed goes to the next one as plain text."""
        self._requested.clear()
        self._blocked = False
        self._pending = [_as_text(item) for item in self._pending]
        self._orphans |= set(self._running)
        self._respond = self._respond or bool(self._pending)

    def end(self, reason: str, now: float, goodbye: str | None) -> None:
        """End the call once ``goodbye`` (None: what was already said) has been heard."""
        if self._ending is not None:
            return
        self._ending, self._ending_by = reason, now + END_GRACE_S
        self.events.append(("ending", {"reason": reason}))
        if goodbye:
            self._respond, self._instructions = True, say(goodbye)

    # ------------------------------------------------------------------ time

    def poll(self, now: float, call: CallState) -> None:
        """Settle what is due: keypad pauses, fillers, nudges, owed responses, the end."""
        if self.hangup is not None:
            return
        digits = self.keypad.poll(now)
        if digits:
            self._keypad(digits, now)
        if self._send_owed(call):
            self.silence.busy()
            return
        quiet = not (call.response_active or self._requested or call.caller_speaking)
        filler_due = self._filler_due is not None and now >= self._filler_due
        if quiet and filler_due and not call.playing:  # never over the agent's own words
            self._filler_due = None
            self._filler()
            quiet = False
        idle = quiet and not (
            call.playing
            or self._running
            or self.keypad.pending
            or self._pending
            or self._respond
            or self._retry
        )
        if self.transferred_to is not None and now >= self._transferred_by:
            self.hangup = f"transferred to {self.transferred_to}"  # no ``stop`` came
            self.events.append(("hangup", {"reason": self.hangup}))
            return
        if self._transfer is not None or self.transferred_to is not None:
            waited = now >= self._transfer_by  # a leg that stopped echoing
            pending = self._transfer is not None and self._transfer.call_id not in self._running
            if pending and (idle or waited):
                assert self._transfer is not None
                self._running[self._transfer.call_id] = now  # the notice was heard: redirect
                self.transfers.append(self._transfer)
            self.silence.busy()
            return
        if self._ending is not None:
            if idle or now >= self._ending_by:
                self.hangup = self._ending
                self.events.append(("hangup", {"reason": self._ending}))
            return
        if not idle:
            self.silence.busy()
        elif self.silence.quiet(now):
            self._nudge(now)
            self._send_owed(call)

    def _send_owed(self, call: CallState) -> bool:
        """Send the items and response owed, if no response is active: whether it did."""
        owed = self._pending or self._respond or self._retry
        busy = call.response_active or self._requested or call.caller_speaking or self._blocked
        if not owed or busy or not call.model_ready:
            return False
        self._send()
        return True

    def next_due(self, now: float) -> float | None:
        if self.hangup is not None:
            return now  # the runner ends the call at its next tick
        dues = [self.keypad.due, self.silence.due]
        if self._filler_due is not None and self._filler_due > now:
            dues.append(self._filler_due)
        if self._ending is not None:
            dues.append(self._ending_by)
        if self._transfer is not None and self._transfer.call_id not in self._running:
            dues.append(self._transfer_by)
        if self.transferred_to is not None:
            dues.append(self._transferred_by)
        return min((d for d in dues if d is not None), default=None)

    # ------------------------------------------------------------------ internals

    def _function_call(self, event: rt.FunctionCallArguments, now: float) -> None:
        call_id = event.call_id
        if call_id in self._seen:
            self.events.append(("tool_duplicate", {"call_id": call_id}))
            return
        self._seen.add(call_id)
        name = self._names.get(event.item_id) or ""
        spec = self._tools.get(name)
        try:
            arguments = json.loads(event.arguments or "{}")
        except ValueError:
            arguments = None
        if name == "transfer_call" and name in self._builtins:
            return self._transfer_call(call_id, arguments, now)
        if name in self._builtins:
            self._builtin(name, call_id, event.response_id, now)
            return
        if spec is None or spec.endpoint is None:
            known = sorted({*self._tools, *self._builtins})
            return self._refuse(call_id, name, f"unknown tool {name!r}; tools: {known}")
        if not isinstance(arguments, dict):
            return self._refuse(call_id, name, "arguments are not a JSON object")
        problem = next(Draft202012Validator(dict(spec.parameters)).iter_errors(arguments), None)
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "arguments"
            return self._refuse(call_id, name, f"invalid arguments at {where}: {problem.message}")
        self._running[call_id] = now
        self.to_tools.append(RunTool(call_id, spec, arguments))
        self.events.append(("tool_started", {"name": name, "call_id": call_id}))
        if self.agent.tool_filler_after_ms and self._filler_due is None:
            self._filler_due = now + self.agent.tool_filler_after_ms / 1000

    def _builtin(self, name: str, call_id: str, response_id: str, now: float) -> None:
        self.events.append(("tool_call", {"name": name, "call_id": call_id, "outcome": "ok"}))
        if name == "end_call":
            # A response that said something already said its goodbye.
            spoke = response_id in self._spoke
            self.end("end_call", now, None if spoke else END_CALL_GOODBYE)
            return
        raise AssertionError(f"built-in {name!r} has no handler")  # see spec.BUILTINS

    def _transfer_call(self, call_id: str, arguments: object, now: float) -> None:
        """Say the notice; once it has been heard, ``poll`` hands the redirect over."""
        config = check(self.agent.transfer, arguments)
        if isinstance(config, str):
            return self._refuse(call_id, "transfer_call", config)
        if not self.can_transfer:
            return self._refuse(call_id, "transfer_call", NOT_ON_THIS_LEG)
        if self._transfer is not None or self._ending is not None:
            return self._refuse(call_id, "transfer_call", "the call is already being ended")
        assert isinstance(arguments, dict)  # check() said so
        target = arguments["target"]
        self._transfer = Transfer(call_id, target, dial_twiml(config, target))
        self._transfer_by = now + END_GRACE_S
        self.events.append(("transfer", {"target": target}))
        if config.notice:
            self._respond, self._instructions = True, say(config.notice)

    def _refuse(self, call_id: str, name: str, message: str) -> None:
        logger.debug("tool call refused: %s", message)  # may quote the arguments
        self.events.append(
            (
                "tool_call",
                {"name": name or "?", "call_id": call_id, "outcome": "refused", "latency_ms": 0.0},
            )
        )
        self._answer(call_id, error_output(message))

    def _answer(self, call_id: str, output: str) -> None:
        item = rt.function_call_output(call_id, output)
        if call_id in self._orphans:  # this session never saw the call
            self._orphans.discard(call_id)
            item = _as_text(item)
        self._pending.append(item)
        self._respond = True

    def _keypad(self, digits: str, now: float) -> None:
        text = keypad_text(digits)
        self.events.append(("dtmf_input", {"digits": digits}))
        self.events.append(("user_text", {"text": text}))
        self.user_texts.append(text)
        self._pending.append(rt.user_text(text))
        self._respond = True

    def _filler(self) -> None:
        # Out of band (conversation "none"): the model's context stays the tool call's.
        event = rt.response_create()
        event["response"] = {"conversation": "none", "instructions": say(self.agent.tool_filler)}
        self._request(event)
        self.events.append(("tool_filler", {}))

    def _nudge(self, now: float) -> None:
        nudges = self.silence.nudges
        self.events.append(("silence", {"nudges": nudges}))
        if self.silence.give_up:
            self.end("caller silent", now, self.agent.silence_goodbye)
        else:
            self._respond, self._instructions = True, say(self.agent.silence_prompt)

    def _send(self) -> None:
        self.to_model.extend(self._pending)
        self._pending = []
        if self._retry is not None:  # what is owed besides goes after its response
            event, self._retry = self._retry, None
            self._request({**event, "event_id": rt.new_event_id()})
        elif self._respond:
            self._respond = False
            self._request(rt.response_create(self._instructions))
            self._instructions = None

    def _request(self, event: dict[str, Any]) -> None:
        self._requested.add(event["event_id"])
        self._asked.put(event["event_id"], event)
        self.to_model.append(event)


def _as_text(item: dict[str, Any]) -> dict[str, Any]:
    """A function_call_output for a session that never saw the call, as a user message."""
    inner = item.get("item", {})
    if inner.get("type") != "function_call_output":
        return item
    return rt.user_text(f"(A tool you called earlier returned: {inner.get('output')})")
