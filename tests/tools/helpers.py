"""A real tool endpoint on loopback (aiohttp) that records and verifies what it gets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.agents import Agent, load_agents
from bridge.tools.signing import SIGNATURE_HEADER, verify

SECRET = "tool-secret-for-tests"


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    signed: bool
    headers: dict[str, str]


@dataclass
class ToolServer:
    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    slow_s: float = 2.5


async def _handle(server: ToolServer, request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    signed = verify(SECRET, raw, request.headers.get(SIGNATURE_HEADER, ""), time.time())
    server.received.append(Received(request.path, json.loads(raw), signed, dict(request.headers)))
    if not signed:
        return web.json_response({"error": "bad signature"}, status=401)
    match request.path:
        case "/lookup_order":
            order = json.loads(raw)["arguments"]["order_id"]
            return web.json_response({"order_id": order, "status": "shipped"})
        case "/slow":
            await asyncio.sleep(server.slow_s)
            return web.json_response({"status": "done slowly"})
        case "/hang":
            await asyncio.sleep(3600)
        case "/fail":
            return web.Response(status=500, text="boom")
        case "/notjson":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        case "/huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            chunk = b"[" + b"1," * 32768
            with contextlib.suppress(ConnectionError):
                for _ in range(160):  # ~10 MB
                    await response.write(chunk)
            return response
    return web.Response(status=404)


@contextlib.asynccontextmanager
async def tool_server() -> AsyncIterator[ToolServer]:
    server = ToolServer()
    app = web.Application()

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _handle(server, request)

    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def agent_from(tmp_path: Path, body: str, base_url: str) -> Agent:
    """The one agent of an agents file ``[agents.test]`` + ``body``."""
    path = tmp_path / "agents.toml"
    path.write_text("[agents.test]\n" + body, encoding="utf-8")
    env = {"TOOLS_SECRET": SECRET, "TOOLS_BASE_URL": base_url}
    agents, _ = load_agents(path, Agent(), env)
    return agents[0]


TOOL = """
[[agents.test.tools]]
name = "{name}"
description = "test tool"
url = "${{TOOLS_BASE_URL}}/{path}"
timeout_s = {timeout}
[agents.test.tools.parameters]
type = "object"
required = ["order_id"]
properties = {{ order_id = {{ type = "string", pattern = "^[A-Z]-[0-9]{{4}}$" }} }}
"""


def tool_table(name: str, path: str, timeout: float = 5.0) -> str:
    return TOOL.format(name=name, path=path, timeout=timeout)
