"""The softphone's web page: ``GET /softphone`` and the files it loads.

    /softphone                          index.html
    /softphone/static/…                 the page's own JS, CSS and AudioWorklet modules
    /softphone/vendor/socket.io.min.js  the Socket.IO client, from node_modules (npm ci)
    /softphone/config                   what the page needs to know before calling

The Socket.IO client is installed from the npm registry at set-up (``package.json``) and
served from ``node_modules``; the page never loads anything from a CDN, and its
Content-Security-Policy only allows its own origin. Every other path goes on to the
bridge's app (``other_asgi_app``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.config import Settings
from bridge.softphone.protocol import DEFAULT_RATE, RATES

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
VENDOR_FILE = Path("socket.io-client") / "dist" / "socket.io.min.js"
# ``npm ci`` at the repository root (source checkouts); the working directory otherwise.
NODE_MODULES = (
    Path(__file__).resolve().parents[2] / "node_modules",
    Path.cwd() / "node_modules",
)
PREFIX = "/softphone"

SECURITY_HEADERS = {
    # connect-src 'self' covers same-origin ws:/wss: in current browsers.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Permissions-Policy": "microphone=(self)",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def vendor_path() -> Path | None:
    for root in NODE_MODULES:
        path = root / VENDOR_FILE
        if path.is_file():
            return path
    return None


def page_app(settings: Settings) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS, media_type="text/html")

    async def vendor(request: Request) -> Response:
        path = vendor_path()
        if path is None:
            logger.error(
                "softphone: %s not found; run `npm ci` at the repository root", VENDOR_FILE
            )
            return PlainTextResponse("socket.io client missing: run `npm ci`", 404)
        return FileResponse(path, media_type="text/javascript", headers=SECURITY_HEADERS)

    async def config(request: Request) -> Response:
        token_required = bool(settings.softphone_token)
        return JSONResponse(
            {
                # Agent names are listed only when anyone may call anyway.
                "agents": None if token_required else [a.name for a in settings.agents],
                "default_agent": settings.default_agent,
                "token_required": token_required,
                "sample_rates": list(RATES),
                "default_sample_rate": DEFAULT_RATE,
                "namespace": "/softphone",
            },
            headers={"Cache-Control": "no-store"},
        )

    return Starlette(
        routes=[
            Route(PREFIX, index),
            Route(PREFIX + "/", index),
            Route(PREFIX + "/config", config),
            Route(PREFIX + "/vendor/socket.io.min.js", vendor),
            Mount(PREFIX + "/static", app=_Headers(StaticFiles(directory=STATIC))),
        ]
    )


class _Headers:
    """Adds the security headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PagesApp:
    """``/softphone…`` to the page router, everything else to ``other_asgi_app``."""

    def __init__(self, settings: Settings, *, other_asgi_app: Any) -> None:
        self.pages = page_app(settings)
        self.other_asgi_app = other_asgi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.pages(scope, receive, send)
        else:
            await self.other_asgi_app(scope, receive, send)
