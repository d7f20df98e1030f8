"""Who gets a call, a stream or a connection: the app's side of the limits and the breaker.

Owns the decisions the web layer asks for, on ``Services``' state (``bridge.limits``,
``bridge.breaker``): the voice webhook's ``admit`` (busy beyond ``MAX_CALLS_PER_CALLER``
or, with ``REDIS_URL``, the cluster's caps; the agent's fallback while the breaker is
open), the per-address check on new media streams and Socket.IO connections, and the
breaker's probe (a model session that answers). It sends nothing itself; numbers reach
the log masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bridge.agents import Agent
from bridge.ai.client import close_quietly
from bridge.clustering import webhook_busy
from bridge.privacy import mask_number
from bridge.services import Services
from twiml.fallback import BUSY_TWIML, fallback_twiml
from twiml.voice import Admit

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0


def admit_for(services: Services) -> Admit:
    """The voice webhook's ``admit``: TwiML instead of the stream, or None."""

    async def admit(caller: str, agent: Agent) -> str | None:
        if services.callers.full(caller):
            logger.warning(
                "voice webhook: %s already has %d live calls, rejecting busy",
                mask_number(caller),
                services.callers.cap,
            )
            services.metrics.limited["caller_cap"] += 1
            services.metrics.call_outcome("rejected_busy")
            return BUSY_TWIML
        if services.model_unreachable:
            logger.warning("voice webhook: model breaker open: agent %r fallback", agent.name)
            services.metrics.limited["breaker_open"] += 1
            return fallback_twiml(agent, services.settings)
        busy = await webhook_busy(services, caller)  # REDIS_URL: the cluster's caps
        if busy is not None:
            logger.warning("voice webhook: %s, rejecting busy", busy)
            services.metrics.limited["cluster_cap"] += 1
            services.metrics.call_outcome("rejected_busy")
            return BUSY_TWIML
        return None

    return admit


def connect_allowed(services: Services, address: str | None, what: str) -> bool:
    """Take a token for a new media stream or Socket.IO connection from ``address``."""
    if services.connects.allow(address or "?", time.monotonic()):
        return True
    services.metrics.limited["connect_rate"] += 1
    refused = services.connects.refused
    if refused <= 10 or refused % 1000 == 0:
        logger.warning("%s from %s refused: over the connection rate limit", what, address)
    return False


async def probe_model(services: Services) -> None:
    """Open a model session and wait for its first event; raise if it does not come."""
    connect = services.connector or services.connect_model
    async with asyncio.timeout(PROBE_TIMEOUT_S):
        model = await connect()
        try:
            await model.recv()
        finally:
            with contextlib.suppress(Exception):
                await close_quietly(model)


async def run_breaker(services: Services) -> None:
    """The breaker's probe loop (the app's lifespan runs it until shutdown)."""
    await services.breaker.run(lambda: probe_model(services))
