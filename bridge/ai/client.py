"""The websocket to the Realtime API (or the local agent). I/O shell, nothing else.

Owns how the bridge connects: the URL with ``?model=``, the one header the GA service wants
(``Authorization: Bearer …``; never the beta ``OpenAI-Beta`` header, which the GA service
refuses), and the message-size limit. What travels over the socket is built and parsed by
``bridge.ai.events``. Connection failures surface as ``SessionClosed``.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from bridge.errors import SessionClosed

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def realtime_uri(url: str, model: str) -> str:
    """``wss://api.openai.com/v1/realtime`` + model → the URI to open."""
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}model={quote(model, safe='')}"


async def connect_realtime(
    url: str, model: str, api_key: str | None, *, open_timeout: float = 10.0
) -> ClientConnection:
    """Open the Realtime websocket; ``api_key`` None → a placeholder for the local agent."""
    uri = realtime_uri(url, model)
    try:
        return await connect(
            uri,
            additional_headers={"Authorization": f"Bearer {api_key or 'local'}"},
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=open_timeout,
            # Base64 audio barely compresses; deflating it would cost CPU on every frame.
            compression=None,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        logger.warning("cannot connect to realtime at %s: %s", url, exc)
        raise SessionClosed(f"cannot connect to the realtime service at {url}: {exc}") from exc
