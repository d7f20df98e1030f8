"""The ``transfer_call`` built-in: its agents-file shape, its checks and its TwiML. Pure.

Owns ``[agents.NAME.transfer]`` (``targets``: an allow-list of names → +E.164 numbers or
``sip:`` URIs; ``notice``, said before the transfer; ``caller_id``; ``timeout_s``, the
``<Dial>`` timeout), the check of the model's arguments against the allow-list (the model
picks a *name* from an enum, so it cannot invent a number), and the ``<Dial>`` TwiML the
live call is redirected to (built with the twilio SDK's ``VoiceResponse``; ``<Sip>`` for
SIP URIs). ``bridge.tools.control`` runs the flow (notice heard, then the redirect); the
runner does the REST call (``bridge.twilio_api``). It must not do I/O.
https://www.twilio.com/docs/voice/twiml/dial
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from twilio.twiml.voice_response import Dial, VoiceResponse

from bridge.errors import ConfigError

NAME = "transfer_call"
DEFAULT_NOTICE = "Transferring you now."
NOT_ON_THIS_LEG = "transfer is not available on this leg (only on phone calls through Twilio)"
_TARGET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP = re.compile(r"sips?:[^\s<>\"]+@[^\s<>\"]+")
_KEYS = {"targets", "notice", "caller_id", "timeout_s"}


@dataclass(frozen=True)
class TransferConfig:
    """Where an agent may transfer calls, and how."""

    targets: tuple[tuple[str, str], ...]  # (name, +E.164 or sip: URI), in file order
    notice: str = DEFAULT_NOTICE
    caller_id: str | None = None  # None: Twilio's default (the caller's number)
    timeout_s: int = 30

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.targets)

    def destination(self, name: str) -> str | None:
        return dict(self.targets).get(name)


@dataclass(frozen=True)
class Transfer:
    """Redirect the live call to ``twiml`` (the runner does it and answers with a
    ``ToolResult`` named ``transfer_call``: outcome "ok", or an error output)."""

    call_id: str
    target: str  # the allow-list name (never logged with its number at INFO)
    twiml: str


def parse_transfer(here: str, raw: object) -> TransferConfig:
    """``[agents.NAME.transfer]`` → config; raises ``ConfigError`` naming the key."""
    where = f"{here}.transfer"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    targets = raw.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise ConfigError(f'{where} targets must be a table of names, e.g. {{sales = "+1…"}}')
    for name, destination in targets.items():
        if not _TARGET_NAME.fullmatch(name):
            raise ConfigError(f"{where} targets: {name!r} must be 1-64 letters, digits, _ or -")
        if not isinstance(destination, str) or not (
            _E164.fullmatch(destination) or _SIP.fullmatch(destination)
        ):
            raise ConfigError(f"{where} targets.{name} must be +E.164 or a sip: URI")
    notice = raw.get("notice", DEFAULT_NOTICE)
    if not isinstance(notice, str):
        raise ConfigError(f"{where} notice must be text")
    caller_id = raw.get("caller_id")
    if caller_id is not None and not (isinstance(caller_id, str) and _E164.fullmatch(caller_id)):
        raise ConfigError(f"{where} caller_id must be a +E.164 number")
    timeout = raw.get("timeout_s", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 5 <= timeout <= 600:
        raise ConfigError(f"{where} timeout_s must be a whole number of seconds in [5, 600]")
    return TransferConfig(tuple(targets.items()), notice.strip(), caller_id, timeout)


def parameters(names: tuple[str, ...]) -> dict[str, Any]:
    """The JSON Schema of ``transfer_call``'s arguments (``target`` one of ``names``)."""
    target: dict[str, Any] = {"type": "string", "description": "Who to transfer the caller to."}
    if names:
        target["enum"] = list(names)
    return {
        "type": "object",
        "properties": {
            "target": target,
            "reason": {"type": "string", "description": "Why, in a few words."},
        },
        "required": ["target"],
        "additionalProperties": False,
    }


def check(config: TransferConfig | None, arguments: object) -> str | TransferConfig:
    """What is wrong with a call (text for the model), or the config to transfer with."""
    if config is None:
        return "transfer_call is not enabled for this agent"
    if not isinstance(arguments, dict):
        return "arguments are not a JSON object"
    extra = set(arguments) - {"target", "reason"}
    if extra:
        return f"unknown arguments {sorted(extra)}; expected target (and reason)"
    target = arguments.get("target")
    if not isinstance(target, str) or config.destination(target) is None:
        return f"target {target!r} is not on the allow-list; choose one of {list(config.names)}"
    return config


def dial_twiml(config: TransferConfig, target: str) -> str:
    """``<Response><Dial …><Number>|<Sip>…</Dial></Response>`` for an allowed ``target``."""
    destination = config.destination(target)
    if destination is None:
        raise ValueError(f"{target!r} is not on the allow-list")
    options: dict[str, Any] = {"timeout": config.timeout_s}
    if config.caller_id:
        options["caller_id"] = config.caller_id
    dial = Dial(**options)
    if destination.startswith(("sip:", "sips:")):
        dial.sip(destination)
    else:
        dial.number(destination)
    response = VoiceResponse()
    response.append(dial)
    return str(response.to_xml(xml_declaration=False))
