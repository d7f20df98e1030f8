"""What every call shares in one server process: settings, metrics, the live calls.

``Services`` lives on ``app.state.services``. It connects each call to the model (the
OpenAI Realtime API, or the built-in local agent when no key is set), keeps the registry of
live calls for draining and capacity, and hands call events to observers (the simulator's
timeline, the softphone's transcript).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection

from bridge.ai.client import connect_realtime
from bridge.call import Call
from bridge.config import Settings
from bridge.metrics import Metrics
from bridge.runner import INTERNAL_ERROR, CallRunner, Ending, Leg, ModelConnector, Observer

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    model_url: str  # the Realtime endpoint calls connect to (OpenAI's or the local agent's)
    metrics: Metrics = field(default_factory=Metrics)
    observers: list[Observer] = field(default_factory=list)
    calls: set[CallRunner] = field(default_factory=set)
    draining: bool = False
    connector: ModelConnector | None = None  # tests may swap the model connection

    @property
    def at_capacity(self) -> bool:
        return len(self.calls) >= self.settings.max_calls

    async def connect_model(self) -> ClientConnection:
        s = self.settings
        return await connect_realtime(self.model_url, s.openai_realtime_model, s.openai_api_key)

    async def run_call(
        self, call: Call, leg: Leg, *, observers: list[Observer] | None = None
    ) -> Ending:
        """Run one call to its end. ``observers`` see this call's events (and the global ones)."""
        runner = CallRunner(
            call,
            leg,
            self.connector or self.connect_model,
            metrics=self.metrics,
            observers=[*self.observers, *(observers or [])],
        )
        self.calls.add(runner)
        self.metrics.calls_started += 1
        self.metrics.calls_active = len(self.calls)
        ending = Ending("internal error", INTERNAL_ERROR)
        try:
            ending = await runner.run()
            return ending
        except asyncio.CancelledError:
            ending = Ending("server shutting down", INTERNAL_ERROR)
            raise
        finally:
            self.calls.discard(runner)
            self.metrics.calls_active = len(self.calls)
            if not ending.normal:
                self.metrics.calls_failed += 1
            logger.info("call %s: ended: %s", call.call_sid, ending.reason)
