"""``create_app(settings)``: the one ASGI app (Starlette) with every route.

    POST /twilio/voice    the voice webhook (TwiML), refused while draining or full
    WS   /twilio/media    Twilio Media Streams
    GET  /healthz         liveness, and whether the server is draining
    GET  /readyz          200 when taking calls; 503 (and why) when draining, full or the
                          model is known unreachable
    GET  /metrics         the Prometheus text format (``bridge.metrics.MetricsCollector``)
    GET  /metrics.json    latency summaries and counters as JSON (the benchmark reads it);
                          both for the whole server under ``--workers`` (``bridge.metrics_pool``)
    /softphone, /socket.io/   the browser softphone (when its package is present)
    GET  /console         the web console on the admin API (``bridge.console``), with
                          ADMIN_TOKEN only

The lifespan starts the built-in local agent on a free loopback port when no
``OPENAI_API_KEY`` is set, and says so in one log line; opens the call records store and
its writer when records are on (``Settings.records_url``), closing both at shutdown; and
runs the event-loop lag probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp

from bridge.admin import admin_routes
from bridge.clustering import join_cluster, leave_cluster
from bridge.companion.routes import companion_routes
from bridge.config import Settings
from bridge.console import console_routes
from bridge.guard import admit_for, run_breaker
from bridge.metrics import Metrics, MetricsCollector, RecordStats
from bridge.metrics_pool import MetricsPool, exposition, json_snapshot
from bridge.outbound.routes import callback_routes
from bridge.phone.leg import twilio_media
from bridge.services import Services
from bridge.softphone import with_softphone
from bridge.wsrealtime.routes import ws_realtime_routes
from bridge.wsvoice.routes import ws_voice_routes
from twiml.fallback import after_routes
from twiml.voice import make_voice_endpoint

if TYPE_CHECKING:
    from bridge.store.db import RecordStore
    from bridge.store.records import CallRecord

logger = logging.getLogger(__name__)

LOOP_LAG_INTERVAL_S = 0.5
PUBLISH_INTERVAL_S = 1.0  # a worker's figures, for the scrapes other workers answer
BUSY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'


def create_app(
    settings: Settings, *, model_url: str | None = None, metrics_pool: MetricsPool | None = None
) -> ASGIApp:
    """Build the app. ``model_url`` overrides where calls connect (tests, benchmarks).

    ``metrics_pool``: this process is one of ``bridge serve --workers N``; ``/metrics`` and
    ``/metrics.json`` then speak for every worker (``bridge.metrics_pool``).
    """
    services = Services(settings, model_url or settings.openai_realtime_url)
    voice = make_voice_endpoint(settings, admit=admit_for(services))
    # The app's own registry: several apps may live in one process (tests, benchmarks).
    registry = CollectorRegistry()
    registry.register(
        MetricsCollector(
            services.metrics,
            lambda: services.records.stats if services.records is not None else None,
        )
    )
    ProcessCollector(registry=registry)

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
            services.metrics.call_outcome("rejected_busy")
            return Response(BUSY_TWIML, media_type="application/xml")
        return response

    async def healthz(request: Request) -> Response:
        status = "draining" if services.draining else "ok"
        return JSONResponse(
            {"status": status, "calls": len(services.calls)},
            status_code=503 if services.draining else 200,
        )

    async def readyz(request: Request) -> Response:
        why = services.not_ready
        return JSONResponse(
            {"ready": why is None, "reason": why, "calls": len(services.calls)},
            status_code=200 if why is None else 503,
        )

    def record_stats() -> RecordStats | None:
        return services.records.stats if services.records is not None else None

    async def metrics(request: Request) -> Response:
        if metrics_pool is not None:
            whole = metrics_pool.whole(services.metrics, record_stats())
            return Response(exposition(whole), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def metrics_json(request: Request) -> Response:
        if metrics_pool is not None:
            whole = metrics_pool.whole(services.metrics, record_stats())
            return JSONResponse(json_snapshot(whole, metrics_pool.answered_by()))
        return JSONResponse(services.metrics.snapshot())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        local = None
        if model_url is None and settings.uses_local_agent:
            from bridge.local_agent import serve_local_agent

            local = await serve_local_agent("127.0.0.1", 0)
            services.model_url = local.url
            services.api_url = local.api_url
            logger.info(
                "no OPENAI_API_KEY: calls go to the built-in local echo agent at %s", local.url
            )
        if not settings.twilio_auth_token:
            logger.warning(
                "TWILIO_AUTH_TOKEN is not set: webhooks and media streams are NOT "
                "verified (fine for local development, never for production)"
            )
        lag = asyncio.create_task(_watch_loop_lag(services.metrics), name="loop lag")
        breaker = asyncio.create_task(run_breaker(services), name="model breaker")
        if metrics_pool is not None:
            shared = asyncio.create_task(
                _publish_figures(metrics_pool, services.metrics, record_stats), name="figures"
            )
        try:
            await _open_records(services)
            await join_cluster(services)  # REDIS_URL: shared caps, live calls, breaker
            yield
        finally:
            await leave_cluster(services)
            await wrapped.softphone.aclose()
            lag.cancel()
            breaker.cancel()
            await asyncio.gather(lag, breaker, return_exceptions=True)
            if metrics_pool is not None:
                shared.cancel()
                await asyncio.gather(shared, return_exceptions=True)
                with contextlib.suppress(OSError):  # the final figures
                    metrics_pool.publish(services.metrics, record_stats())
            await _close_records(services)
            if local is not None:
                await local.close()

    routes: list[Any] = [
        Route("/twilio/voice", voice_webhook, methods=["POST"]),
        WebSocketRoute("/twilio/media", twilio_media),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/metrics.json", metrics_json),
        *after_routes(settings, services.breaker.failed),
        *callback_routes(services),  # /twilio/status, /twilio/amd (bridge.outbound)
        *companion_routes(services),
        *admin_routes(services),
        *console_routes(settings),
        *ws_realtime_routes(services),
        *ws_voice_routes(services),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    # Socket.IO at /socket.io/ and the page at /softphone; the rest (and the lifespan)
    # reaches this app, still found as ``.other_asgi_app``.
    wrapped = with_softphone(app, services)
    return wrapped


async def _open_records(services: Services) -> None:
    """Open the records store and start its writer, when records are on.

    A malformed URL fails start-up. A database that does not answer does not: calls go
    on, the store migrates before its first write that gets through, and until then
    records are lost and counted (``bridge_records_lost_total``).
    """
    settings = services.settings
    url = settings.records_url
    if url is None:
        logger.info("call records are off (set RECORDS_PATH or DATABASE_URL to keep them)")
        return
    from bridge.errors import ConfigError
    from bridge.store.db import open_store
    from bridge.store.writer import RecordSink, RecordWriter

    sink: RecordSink
    try:
        store = await open_store(url)
        sink = store
    except ConfigError:
        raise
    except Exception as exc:
        store = await open_store(url, migrate=False)
        sink = _MigrateFirst(store)
        logger.error(
            "records: the database at %s is not answering (%s: %s); calls go on, "
            "their records are lost until it does",
            store.url,
            type(exc).__name__,
            exc,
        )
    writer = RecordWriter(sink, retention_days=settings.records_retention_days)
    writer.start()
    services.records, services.records_where = writer, store.url


async def _close_records(services: Services) -> None:
    """Write what is queued, then close the store. The writer stays on ``services`` for
    its final counts (a record submitted now is dropped and counted)."""
    writer = services.records
    if writer is None:
        return
    try:
        await writer.close()
    finally:
        close = getattr(writer.sink, "close", None)
        if close is not None:
            await close()


class _MigrateFirst:
    """A store that was down at start-up: migrated before its first write or purge."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._migrated = False

    async def _migrate(self) -> None:
        if not self._migrated:
            await self.store.migrate()
            self._migrated = True
            logger.info("records: %s migrated; records are kept again", self.store.url)

    async def save(self, record: CallRecord) -> None:
        await self._migrate()
        await self.store.save(record)

    async def purge_older_than(self, days: float) -> int:
        await self._migrate()
        return await self.store.purge_older_than(days)

    async def close(self) -> None:
        await self.store.close()


async def _publish_figures(
    pool: MetricsPool, metrics: Metrics, records: Callable[[], RecordStats | None]
) -> None:
    """Write this worker's figures for the others' scrapes, every ``PUBLISH_INTERVAL_S``."""
    while True:
        try:
            pool.publish(metrics, records())
        except OSError as exc:  # a full or vanished directory: figures stale, calls fine
            logger.warning("could not publish this worker's figures: %s", exc)
        await asyncio.sleep(PUBLISH_INTERVAL_S)


async def _watch_loop_lag(metrics: Metrics) -> None:
    """How late the event loop wakes a sleeper: every call's frames wait that long too."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(LOOP_LAG_INTERVAL_S)
        metrics.loop_lag.add(max(time.monotonic() - start - LOOP_LAG_INTERVAL_S, 0.0) * 1000)
