"""The websocket to the Realtime API (or the local agent). I/O shell, nothing else.

Owns how the bridge connects: the URL with ``?model=``, the one header the GA service wants
(``Authorization: Bearer …``; never the beta ``OpenAI-Beta`` header, which the GA service
refuses) and the message-size limit; the socket facts the runner asks about (open, unsent
bytes, the HTTP status of a refused handshake); and how a socket is let go. What travels
over the socket is built and parsed by ``bridge.ai.events``. Connection failures surface as
``SessionClosed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from bridge.errors import SessionClosed

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Keepalive tuned for telephony: a model socket that stops answering (a stalled or
# half-open session) is given up within ~10 s, so the call can reconnect, instead of the
# library's 20 + 20 s of dead air.
PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 1.0


def realtime_uri(url: str, model: str) -> str:
    """``wss://api.openai.com/v1/realtime`` + model → the URI to open."""
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}model={quote(model, safe='')}"


async def connect_realtime(
    url: str,
    model: str,
    api_key: str | None,
    *,
    open_timeout: float = 10.0,
    ping_interval: float = PING_INTERVAL_S,
    ping_timeout: float = PING_TIMEOUT_S,
) -> ClientConnection:
    """Open the Realtime websocket; ``api_key`` None → a placeholder for the local agent."""
    uri = realtime_uri(url, model)
    try:
        return await connect(
            uri,
            additional_headers={"Authorization": f"Bearer {api_key or 'local'}"},
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            # A peer that does not answer our close (a stalled session) is cut after this.
            close_timeout=CLOSE_TIMEOUT_S,
            # Base64 audio barely compresses; deflating it would cost CPU on every frame.
            compression=None,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        logger.warning("cannot connect to realtime at %s: %s", url, exc)
        raise SessionClosed(f"cannot connect to the realtime service at {url}: {exc}") from exc


# What a failed model handshake raises (``connect_realtime`` wraps most in SessionClosed).
CONNECT_ERRORS = (SessionClosed, OSError, InvalidHandshake, InvalidURI, TimeoutError)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a refused handshake got (None: no HTTP answer)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InvalidStatus):
            return seen.response.status_code
        seen = seen.__cause__
    return None


def is_open(model: ClientConnection) -> bool:
    """The socket takes sends now (a stand-in without a state counts as open)."""
    return getattr(model, "state", State.OPEN) is State.OPEN


def backlog(model: ClientConnection) -> int:
    """Bytes written to the model socket and not yet taken by the kernel."""
    transport = getattr(model, "transport", None)
    return 0 if transport is None else int(transport.get_write_buffer_size())


# What a websockets frame adds to a text message, at most (header, length, client mask).
_FRAME_OVERHEAD = 14


def fits(model: ClientConnection, payloads: list[bytes]) -> bool:
    """Sending ``payloads`` now cannot wait: they fit below the socket's write limit,
    past which a send waits for the peer to read (a stand-in without one: they fit)."""
    transport = getattr(model, "transport", None)
    if transport is None:
        return True
    if getattr(model, "paused", False):  # above the limit, not yet back below the low mark
        return False
    size = sum(len(p) + _FRAME_OVERHEAD for p in payloads)
    return bool(transport.get_write_buffer_size() + size < transport.get_write_buffer_limits()[1])


async def close_quietly(model: ClientConnection) -> None:
    """Close a socket we are done with: at most ~1 s, then cut (a deaf peer never answers)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await model.close()
    if model.state.name != "CLOSED":
        model.transport.abort()
