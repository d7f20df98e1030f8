"""Run a real bridge server in-process on a free loopback port (demo, tests, benchmarks).

    async with running_bridge(settings) as bridge:
        result = await simulate_call(bridge.base_url, wav, public_url=bridge.public_url, ...)

The server is the same uvicorn + Starlette stack ``bridge serve`` runs, on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bridge.app import create_app
from bridge.config import Settings
from bridge.server import DrainingServer, free_socket, make_server, services_of
from bridge.services import Services


@dataclass
class RunningBridge:
    base_url: str  # where to connect (http://127.0.0.1:PORT)
    public_url: str  # what the webhook signatures are computed over
    auth_token: str | None
    services: Services
    app: Any
    server: DrainingServer
    task: asyncio.Task[None]  # the server's serve() task


def signed_settings(settings: Settings | None = None, **changes: Any) -> Settings:
    """Settings with a fresh Twilio auth token, so every check runs as in production."""
    base = settings or Settings()
    return base.with_(twilio_auth_token=secrets.token_hex(16), **changes)


@contextlib.asynccontextmanager
async def running_bridge(
    settings: Settings, *, model_url: str | None = None, sock: socket.socket | None = None
) -> AsyncIterator[RunningBridge]:
    """``sock``: listen there (when PUBLIC_URL must name the port before the settings
    exist); by default a free loopback port. The socket is closed at the end."""
    sock = sock or free_socket()
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    if settings.twilio_auth_token and not settings.public_url:
        settings = settings.with_(public_url=base_url)
    app = create_app(settings, model_url=model_url)
    services = services_of(app)
    server = make_server(settings, app, services)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
            await asyncio.sleep(0.01)
        yield RunningBridge(
            base_url,
            settings.public_url or base_url,
            settings.twilio_auth_token,
            services,
            app,
            server,
            task,
        )
    finally:
        server.should_exit = True
        await task
        sock.close()
