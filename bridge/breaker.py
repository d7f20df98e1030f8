"""The model circuit breaker, and which calls lost their model (for their fallback).

Owns what this process knows about reaching the model, and nothing about calls' audio:

- After ``threshold`` consecutive calls that could not reach the model (their retry
  budget ran out), the breaker opens: the voice webhook answers new calls with their
  agent's fallback TwiML at once (no stream, no model session), and ``/readyz`` says 503
  (``Services.model_unreachable``). While open, :meth:`ModelBreaker.run` probes every
  ``probe_s`` seconds by opening a model session and waiting for its first event; the
  first probe that gets one closes the breaker. A call that reaches the model closes it
  too, and resets the count.
- ``failed(call_sid)``: whether a call of this process ended because the model could not
  be reached. The ``<Connect action>`` handler (``twiml.fallback``) asks it to decide
  between the agent's fallback and a plain hang-up. Bounded: the newest
  ``KEPT_FAILURES`` are kept.

It imports no web framework; the probe is a coroutine given by the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

KEPT_FAILURES = 1024
Probe = Callable[[], Awaitable[None]]  # raises when the model cannot be reached


class ModelBreaker:
    def __init__(
        self, threshold: int, probe_s: float, on_change: Callable[[bool], None] = lambda _: None
    ) -> None:
        self.threshold = threshold  # 0: never opens
        self.probe_s = probe_s
        self.on_change = on_change
        self.consecutive = 0  # calls in a row that could not reach the model
        self.is_open = False
        self.opened_times = 0
        self.probes = 0
        self._opened = asyncio.Event()
        self._failures: OrderedDict[str, None] = OrderedDict()

    def call_ended(self, call_sid: str, *, reached_model: bool, unreachable: bool) -> None:
        """Count a call's outcome. ``unreachable``: its model could not be reached;
        ``reached_model``: it had a session at some point (neither: it proves nothing)."""
        if unreachable:
            self._failures[call_sid] = None
            self._failures.move_to_end(call_sid)
            while len(self._failures) > KEPT_FAILURES:
                self._failures.popitem(last=False)
            self.consecutive += 1
            if self.threshold and self.consecutive >= self.threshold and not self.is_open:
                logger.error(
                    "model breaker open: %d calls in a row could not reach the model; new "
                    "calls get their fallback until a probe reaches it",
                    self.consecutive,
                )
                self._set(True)
        elif reached_model:
            self.consecutive = 0
            if self.is_open:
                logger.info("model breaker closed: a call reached the model")
                self._set(False)

    def failed(self, call_sid: str) -> bool:
        return call_sid in self._failures

    def _set(self, is_open: bool) -> None:
        self.is_open = is_open
        if is_open:
            self.opened_times += 1
            self._opened.set()
        else:
            self.consecutive = 0
            self._opened.clear()
        self.on_change(is_open)

    async def run(self, probe: Probe) -> None:
        """Probe while open, until cancelled (the app's lifespan runs it)."""
        while True:
            await self._opened.wait()
            await asyncio.sleep(self.probe_s)
            if not self.is_open:
                continue
            self.probes += 1
            try:
                await probe()
            except Exception as exc:
                logger.warning(
                    "model breaker probe: still unreachable (%s: %s)", type(exc).__name__, exc
                )
                continue
            if self.is_open:
                logger.info("model breaker closed: a probe reached the model")
                self._set(False)
