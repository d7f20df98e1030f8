"""A tool endpoint for ``bridge simulate --tool-server``: answers every tool of the agents
file on the host and port of its URL, after checking the request's signature.

It answers ``{"tool", "arguments", "signature": "valid", "status": …}`` after ``delay_s``
(to show the filler line of a slow tool), and 401 to a request whose signature does not
check out. For demonstrations only: it trusts nothing and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.config import Settings
from bridge.tools.signing import SIGNATURE_HEADER, verify


def demo_app(secrets: list[str], delay_s: float) -> Starlette:
    async def answer(request: Request) -> Response:
        body = await request.body()
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not any(verify(s, body, header, time.time()) for s in secrets):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        payload = json.loads(body)
        await asyncio.sleep(delay_s)
        return JSONResponse(
            {
                "tool": payload.get("tool"),
                "arguments": payload.get("arguments"),
                "signature": "valid",
                "status": "shipped, arriving Monday",
            }
        )

    return Starlette(routes=[Route("/{path:path}", answer, methods=["POST", "PUT", "PATCH"])])


@contextlib.asynccontextmanager
async def serve_demo_tools(settings: Settings, delay_s: float) -> AsyncIterator[list[str]]:
    """Serve the demo endpoint on every host:port the agents' tools point at."""
    secrets = [a.tools_secret for a in settings.agents if a.tools_secret]
    places = {
        (parts.hostname or "127.0.0.1", parts.port or 80)
        for a in settings.agents
        for t in a.tools
        if t.endpoint is not None and (parts := urlsplit(t.endpoint.url))
    }
    servers = []
    for host, port in sorted(places):
        config = uvicorn.Config(
            demo_app(secrets, delay_s), host=host, port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        servers.append((server, asyncio.create_task(server.serve())))
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield [f"http://{h}:{p}" for h, p in sorted(places)]
    finally:
        for server, task in servers:
            server.should_exit = True
            await task
