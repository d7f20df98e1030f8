"""The console's page and the files it loads, served from the package (no CDN).

    /console                  index.html
    /console/static/<file>    its JS and CSS

The page itself holds nothing secret and is served without a token; it asks for the admin
token (kept in the tab's ``sessionStorage``, or taken once from ``#token=…`` in the
address) and sends it as ``Authorization: Bearer`` with every call to the admin API. Like
that API, the console is absent (404) when no ``ADMIN_TOKEN`` is configured. Its
Content-Security-Policy allows only its own origin (and ``blob:`` media: the recording is
fetched with the token, then played from memory).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.config import Settings

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/console"
# Every file the page loads, and its type: nothing else under /console/static is served.
FILES = {
    "console.css": "text/css",
    "api.js": "text/javascript",
    "waveform.js": "text/javascript",
    "call.js": "text/javascript",
    "console.js": "text/javascript",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def console_routes(settings: Settings) -> list[BaseRoute]:
    """The console's routes; none without an admin token (the API is off then too)."""
    if not settings.admin_token:
        return []

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = FILES.get(name)
        if media_type is None:
            return PlainTextResponse("not found", 404, headers=SECURITY_HEADERS)
        return FileResponse(STATIC / name, media_type=media_type, headers=SECURITY_HEADERS)

    return [
        Route(PREFIX, index),
        Route(PREFIX + "/", index),
        Route(PREFIX + "/static/{name}", static),
    ]
