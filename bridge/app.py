"""``create_app(settings)``: the one ASGI app (Starlette) with every route.

    POST /twilio/voice    the voice webhook (TwiML), refused while draining or full
    WS   /twilio/media    Twilio Media Streams
    GET  /healthz         liveness, and whether the server is draining
    GET  /metrics         latency histograms and counters as JSON
    /softphone, /socket.io/   the browser softphone (when its package is present)

The lifespan starts the built-in local agent on a free loopback port when no
``OPENAI_API_KEY`` is set, and says so in one log line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp

from bridge.config import Settings
from bridge.phone.leg import twilio_media
from bridge.services import Services
from bridge.softphone import with_softphone
from twiml.voice import make_voice_endpoint

logger = logging.getLogger(__name__)

BUSY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'


def create_app(settings: Settings, *, model_url: str | None = None) -> ASGIApp:
    """Build the app. ``model_url`` overrides where calls connect (tests, benchmarks)."""
    services = Services(settings, model_url or settings.openai_realtime_url)
    voice = make_voice_endpoint(settings)

    async def voice_webhook(request: Request) -> Response:
        if services.draining:
            # 503 lets Twilio's fallback URL (another instance) take the call.
            logger.warning("voice webhook refused: draining for shutdown")
            return Response("draining", status_code=503, headers={"Retry-After": "5"})
        response = await voice(request)  # checks the signature first
        if response.status_code == 200 and services.at_capacity:
            logger.warning(
                "voice webhook: at capacity (%d calls), rejecting busy", len(services.calls)
            )
            return Response(BUSY_TWIML, media_type="application/xml")
        return response

    async def healthz(request: Request) -> Response:
        status = "draining" if services.draining else "ok"
        return JSONResponse(
            {"status": status, "calls": len(services.calls)},
            status_code=503 if services.draining else 200,
        )

    async def metrics(request: Request) -> Response:
        return JSONResponse(services.metrics.snapshot())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        local = None
        if model_url is None and settings.uses_local_agent:
            from bridge.local_agent import serve_local_agent

            local = await serve_local_agent("127.0.0.1", 0)
            services.model_url = local.url
            logger.info(
                "no OPENAI_API_KEY: calls go to the built-in local echo agent at %s", local.url
            )
        if not settings.twilio_auth_token:
            logger.warning(
                "TWILIO_AUTH_TOKEN is not set: webhooks and media streams are NOT "
                "verified (fine for local development, never for production)"
            )
        try:
            yield
        finally:
            if local is not None:
                await local.close()

    routes: list[Any] = [
        Route("/twilio/voice", voice_webhook, methods=["POST"]),
        WebSocketRoute("/twilio/media", twilio_media),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    # Socket.IO at /socket.io/ and the page at /softphone; the rest (and the lifespan)
    # reaches this app, still found as ``.other_asgi_app``.
    return with_softphone(app, services)
