"""Tool declarations: what an agent may call, how it is declared to the model. Pure.

Owns the agents-file shape of a tool (``[[agents.NAME.tools]]``: name, description, JSON
Schema ``parameters`` and an HTTP endpoint) and its checks, ``${ENV}`` expansion in
endpoint headers (done once, at load time, from the environment ``bridge.config`` read),
the built-in tools (``BUILTINS``: ``end_call``, ``transfer_call``, whose rules are in
``bridge.tools.transfer``)
and the ``tools`` list sent in ``session.update``. It must not do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from bridge.errors import ConfigError
from bridge.tools import transfer

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class ToolEndpoint:
    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    timeout_s: float = 10.0
    retries: int = 0  # extra attempts after a timeout or connection failure (never after 4xx)


@dataclass(frozen=True)
class ToolSpec:
    """One tool the model may call: its declaration, and where the bridge runs it."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(hash=False)  # a dict: not hashable
    endpoint: ToolEndpoint | None = None  # None: a built-in

    def declaration(self) -> dict[str, Any]:
        """The entry of ``session.tools`` (Realtime GA function tool)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


_NO_ARGS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

# Tools the bridge runs itself, enabled per agent by name. A new built-in (``transfer_call``)
# adds its declaration here and its handling in ``bridge.tools.control.CallControl``.
BUILTINS: dict[str, ToolSpec] = {
    "end_call": ToolSpec(
        "end_call",
        "End the phone call. Say a short goodbye first, then call this; the line is closed "
        "once the caller has heard everything you said.",
        _NO_ARGS,
    ),
    # Declared per agent with ``target`` an enum of its allow-list (see ``declarations``).
    "transfer_call": ToolSpec(
        "transfer_call",
        "Transfer the caller to a person or team. Pick the target by name from the list; "
        "the caller hears a short notice, then the call is connected to them.",
        transfer.parameters(()),
    ),
}

_TOOL_KEYS = {
    "name",
    "description",
    "parameters",
    "url",
    "method",
    "headers",
    "timeout_s",
    "retries",
}


def parse_tools(raw: object, here: str, env: Mapping[str, str]) -> tuple[ToolSpec, ...]:
    """``[[agents.NAME.tools]]`` tables → tool specs; raises ``ConfigError`` naming the key."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{here} tools must be an array of tables ([[agents.NAME.tools]])")
    tools: list[ToolSpec] = []
    for i, spec in enumerate(raw):
        where = f"{here}.tools[{i}]"
        unknown = set(spec) - _TOOL_KEYS
        if unknown:
            raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where} name must be 1-64 letters, digits, '_' or '-'")
        if name in BUILTINS or any(t.name == name for t in tools):
            raise ConfigError(f"{where} name {name!r} is a built-in or declared twice")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where} description must be text")
        parameters = spec.get("parameters", dict(_NO_ARGS))
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise ConfigError(f"{where} parameters must be a JSON Schema with type = 'object'")
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise ConfigError(
                f"{where} parameters is not a valid JSON Schema: {exc.message}"
            ) from None
        tools.append(ToolSpec(name, description, parameters, _endpoint(spec, where, env)))
    return tuple(tools)


def _endpoint(spec: dict[str, Any], where: str, env: Mapping[str, str]) -> ToolEndpoint:
    url = spec.get("url")
    url = expand_env(url, f"{where} url", env) if isinstance(url, str) else None
    parts = urlsplit(url) if url is not None else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where} url must be an http(s) URL")
    method = spec.get("method", "POST")
    if method not in METHODS:
        raise ConfigError(f"{where} method must be one of {sorted(METHODS)}")
    headers = spec.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f"{where} headers must be a table of text values")
    timeout = spec.get("timeout_s", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
        raise ConfigError(f"{where} timeout_s must be a number in (0, 120]")
    retries = spec.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 5:
        raise ConfigError(f"{where} retries must be a whole number in [0, 5]")
    expanded = tuple((k, expand_env(v, f"{where} headers.{k}", env)) for k, v in headers.items())
    return ToolEndpoint(str(url), method, expanded, float(timeout), retries)


def expand_env(value: str, where: str, env: Mapping[str, str]) -> str:
    """Replace each ``${NAME}`` with the environment variable; unset is an error."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{where} refers to ${{{name}}}, which is not set")
        return env[name]

    return _ENV_REF.sub(sub, value)


def declarations(
    tools: tuple[ToolSpec, ...], builtins: tuple[str, ...], transfer_targets: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """``session.tools`` for an agent's HTTP tools and enabled built-ins; ``transfer_call``
    lists the agent's transfer targets by name."""
    specs = [*tools, *(BUILTINS[n] for n in builtins)]
    targets = transfer.parameters(transfer_targets)
    return [
        (replace(t, parameters=targets) if t.name == transfer.NAME else t).declaration()
        for t in specs
    ]


def trigger_lines(triggers: tuple[tuple[str, str], ...]) -> str:
    """Instruction lines teaching the local agent its tool triggers
    (``bridge.local_agent.tools`` reads them; the real model just sees a note)."""
    return "\n".join(f"[local-agent trigger] {key} -> {tool}" for key, tool in triggers)
