"""Running HTTP tools beside a call: the I/O half of ``bridge.tools.control``.

The runner owns one :class:`ToolExecutor` per call. ``start`` runs a :class:`RunTool` as a
task of its own (never on the audio path) and hands the :class:`ToolResult` to the
runner's callback; ``start_transfer`` redirects the call for ``transfer_call`` through
``redirect`` (the Twilio REST API, set for phone legs only); ``close`` cancels what is still
running when the call ends.

The request: ``POST`` (or the endpoint's method) of
``{"call": {"sid", "agent", "from", "to"}, "tool", "arguments"}`` as JSON, signed
(``bridge.tools.signing``), with the endpoint's headers. ``from`` is masked unless the
agent sends caller numbers. The answer must be 2xx with a JSON body of at most
``MAX_RESPONSE_BYTES`` (read as a stream, never buffered past the cap); anything else
becomes an error output for the model. Timeouts and connection failures are retried
``retries`` times; HTTP answers are not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bridge.agents import Agent
from bridge.background import spawn
from bridge.errors import BridgeError
from bridge.privacy import mask_number
from bridge.tools.control import RunTool, ToolResult, error_output
from bridge.tools.signing import SIGNATURE_HEADER, sign
from bridge.tools.transfer import Transfer

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
ResultSink = Callable[[ToolResult], Awaitable[None]]
# Redirects a live call (call sid, TwiML) through the Twilio REST API (``bridge.twilio_api``).
Redirect = Callable[[str, str], Awaitable[None]]


class ToolFailed(Exception):
    """A tool run that gave no usable answer; ``outcome`` names why."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class ToolExecutor:
    def __init__(self, call_sid: str, agent: Agent, sink: ResultSink) -> None:
        self.call_sid = call_sid
        self.agent = agent
        self.sink = sink
        self.caller = ""
        self.called = ""
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by Services for Twilio calls: transfer_call is possible (else "not on this leg").
        self.redirect: Redirect | None = None

    def parties(self, caller: str, called: str) -> None:
        """The call's numbers (raw; ``from`` is masked in requests unless allowed)."""
        self.caller, self.called = caller, called

    def start(self, command: RunTool) -> None:
        spawn(self._tasks, self._run(command), f"tool {command.spec.name}")

    def start_transfer(self, transfer: Transfer) -> None:
        """Redirect the call for ``transfer_call``; the result reaches the sink like a tool's."""
        spawn(self._tasks, self._transfer(transfer), "transfer_call")

    async def _transfer(self, transfer: Transfer) -> None:
        started = time.monotonic()
        output, outcome = json.dumps({"status": "transferring", "target": transfer.target}), "ok"
        try:
            if self.redirect is None:
                raise BridgeError("this leg cannot be redirected")
            await self.redirect(self.call_sid, transfer.twiml)
        except BridgeError as exc:  # TwilioApiError, or ConfigError: no account configured
            logger.warning(
                "call %s: transfer to %s failed: %s", self.call_sid, transfer.target, exc
            )
            status = getattr(exc, "status", None)
            outcome = f"http_{status}" if status else "transfer_failed"
            output = error_output(
                f"the transfer to {transfer.target} failed ({exc}); the call goes on: "
                "tell the caller"
            )
        await self.sink(
            ToolResult(
                transfer.call_id, "transfer_call", output, outcome, time.monotonic() - started
            )
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def body(self, command: RunTool) -> bytes:
        caller = self.caller if self.agent.tools_send_caller_number else mask_number(self.caller)
        payload = {
            "call": {
                "sid": self.call_sid,
                "agent": self.agent.name,
                "from": caller,
                "to": self.called,
            },
            "tool": command.spec.name,
            "arguments": command.arguments,
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    async def _run(self, command: RunTool) -> None:
        started = time.monotonic()
        name = command.spec.name
        try:
            answer = await self._call(command)
            output, outcome = json.dumps(answer), "ok"
        except ToolFailed as exc:
            logger.warning("call %s: tool %s failed: %s", self.call_sid, name, exc)
            output, outcome = error_output(f"the tool {name} failed: {exc}"), exc.outcome
        await self.sink(
            ToolResult(command.call_id, name, output, outcome, time.monotonic() - started)
        )

    async def _call(self, command: RunTool) -> Any:
        endpoint = command.spec.endpoint
        assert endpoint is not None  # control sends HTTP tools only
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        body = self.body(command)
        for attempt in range(endpoint.retries + 1):
            headers = {
                **dict(endpoint.headers),
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self.agent.tools_secret or "", body, int(time.time())),
            }
            try:
                async with asyncio.timeout(endpoint.timeout_s):
                    return await self._send(endpoint.method, endpoint.url, headers, body)
            except (TimeoutError, httpx.TransportError) as exc:
                if attempt == endpoint.retries:
                    if isinstance(exc, TimeoutError):
                        raise ToolFailed(
                            "timeout", f"no answer in {endpoint.timeout_s:g} s"
                        ) from None
                    raise ToolFailed("unreachable", type(exc).__name__) from None
        raise AssertionError("unreachable")

    async def _send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        assert self._client is not None
        request = self._client.build_request(method, url, headers=headers, content=body)
        response = await self._client.send(request, stream=True)
        try:
            if not 200 <= response.status_code < 300:
                raise ToolFailed(f"http_{response.status_code}", f"HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_RESPONSE_BYTES:
                    raise ToolFailed("too_large", f"answer over {MAX_RESPONSE_BYTES} bytes")
        finally:
            await response.aclose()
        try:
            return json.loads(data)
        except ValueError:
            raise ToolFailed("bad_json", "the answer is not JSON") from None
