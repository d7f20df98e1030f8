"""The built-in local agent: a websockets server that speaks the Realtime GA protocol.

Owns only I/O: the handshake checks the service makes (path, bearer header, ``model``
query, no beta header), pumping client frames into an :class:`AgentSession` and its
server events back out, and closing the socket when the session says so (maximum
duration). Everything the agent *does* lives in the sans-I/O ``bridge.local_agent.session``
and the modules it drives; the package's public names are re-exported here.

It is at once the keyless default agent (``bridge local-agent``), the demo, and the test
double for the real service: it echoes what the caller says, greets on a bare
``response.create``, and rejects what the real service rejects.

Fault switches (:class:`Faults`), so the demo, the tests and the benchmark share one
fault-capable double: refuse the first K handshakes with a chosen HTTP status (429, 503,
401…); and, for the first ``sessions`` sessions (None: all), expire the session after N
seconds (``session_expired`` then close 1001, as the service does at its cap), stall after
N seconds (stop reading and answering but keep the socket open), or drop after N seconds
(1006: the TCP connection is cut with no close frame; 1011: an abrupt close frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.local_agent.response import GREETING_TRANSCRIPT, load_greeting
from bridge.local_agent.rest import ClientSecrets, RestServer
from bridge.local_agent.session import AgentSession

__all__ = [
    "GREETING_TRANSCRIPT",
    "AgentSession",
    "Faults",
    "LocalAgentServer",
    "load_greeting",
    "serve_local_agent",
]

logger = logging.getLogger(__name__)

PATH = "/v1/realtime"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


KEPT_SESSIONS = 64
STALL_HOLD_S = 120.0  # how long a stalled session keeps its socket at most


@dataclass
class Faults:
    """What the local agent does wrong on command (see the module doc)."""

    refuse_status: int = 503  # HTTP status of a refused handshake
    refuse_first: int = 0  # how many handshakes to refuse, from now
    expire_after_s: float | None = None
    stall_after_s: float | None = None
    drop_after_s: float | None = None
    drop_code: int = 1006  # 1006 (no close frame) or 1011
    sessions: int | None = None  # how many sessions the timed faults hit (None: all)

    def __post_init__(self) -> None:
        if self.drop_code not in (1006, 1011):
            raise ValueError("drop_code must be 1006 or 1011")


class LocalAgentServer:
    """A running local agent.

    ``sessions`` holds the sessions it accepted and ``closed_sessions`` those whose socket
    has closed, for tests; both keep only the latest ``KEPT_SESSIONS`` so a long-running
    keyless server does not grow without bound.
    """

    def __init__(self, host: str, options: dict[str, Any], faults: Faults | None = None) -> None:
        self.host = host
        self.faults = faults or Faults()
        self.refused: list[int] = []  # the status of every handshake refused on command
        self.stalled: list[str] = []  # ids of the sessions stalled on command
        self._stalled_sockets: set[ServerConnection] = set()
        self._wakes: dict[int, tuple[AgentSession, asyncio.Event]] = {}  # open sessions
        self.sessions: deque[AgentSession] = deque(maxlen=KEPT_SESSIONS)
        self.closed_sessions: deque[AgentSession] = deque(maxlen=KEPT_SESSIONS)
        self._accepted = 0
        self._options = options
        self._server: Server | None = None
        # Ephemeral client secrets and speech, on their own HTTP port (``rest``).
        self.secrets = ClientSecrets()
        self._rest = RestServer(host, self.secrets)

    async def _start(self, port: int) -> None:
        await self._rest.start()
        self._server = await serve(
            self._handle,
            self.host,
            port,
            process_request=self._check_path,
            max_size=MAX_MESSAGE_BYTES,
            select_subprotocol=_select_subprotocol,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{PATH}"

    @property
    def api_url(self) -> str:
        """The REST base (``http://…/v1``): client secrets and speech."""
        return self._rest.url

    async def close(self) -> None:
        await self._rest.close()
        for ws in list(self._stalled_sockets):  # they would not answer a close either
            ws.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> LocalAgentServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def expire_now(self) -> int:
        """Expire every open session now (``session_expired``, close 1001); how many."""
        loop = asyncio.get_running_loop()
        for session, wake in self._wakes.values():
            session.expire_at(loop.time())
            wake.set()
        return len(self._wakes)

    # ------------------------------------------------------------------ handshake

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return connection.respond(404, "Not Found\n")
        faults = self.faults
        if faults.refuse_first > 0:
            faults.refuse_first -= 1
            self.refused.append(faults.refuse_status)
            logger.info("local agent refused a handshake with %d (fault)", faults.refuse_status)
            return connection.respond(faults.refuse_status, "Refused on command\n")
        return None

    @staticmethod
    def _refusal(request: Request) -> tuple[dict[str, Any], int, str] | None:
        """What the service answers (after the 101) to a connection it will not serve."""
        headers: Headers = request.headers
        if "OpenAI-Beta" in headers:
            return (
                _error(
                    "beta_api_shape_disabled",
                    "The beta Realtime API shape is "
                    "disabled; use the GA shape (remove the OpenAI-Beta header).",
                ),
                4000,
                "invalid_request_error.beta_api_shape_disabled",
            )
        if not bearer_of(request):
            return (
                _error(None, "Missing bearer or basic authentication in header"),
                3000,
                "invalid_request_error",
            )
        if not parse_qs(urlsplit(request.path).query).get("model"):
            return (
                _error(
                    "missing_model",
                    "You must provide a model parameter, for example "
                    "wss://api.openai.com/v1/realtime?model=gpt-realtime",
                ),
                4000,
                "invalid_request_error.missing_model",
            )
        return None

    def _secret_refusal(self, request: Request) -> tuple[dict[str, Any], int, str] | None:
        """An ephemeral key (``ek_…``) must be one minted here, and not expired."""
        why = self.secrets.refusal(bearer_of(request))
        if why is None:
            return None
        return _error("invalid_api_key", why), 3000, "invalid_request_error.invalid_api_key"

    # ------------------------------------------------------------------ session pump

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        refusal = self._refusal(ws.request) or self._secret_refusal(ws.request)
        if refusal is not None:
            event, code, reason = refusal
            logger.info("local agent refused a connection: %s", reason)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(event))
                await ws.close(code, reason)
            return
        loop = asyncio.get_running_loop()
        model = parse_qs(urlsplit(ws.request.path).query)["model"][0]
        options = dict(self._options)
        if options.get("seed") is not None:  # distinct ids in every session
            options["seed"] += self._accepted
        faults = self.faults
        faulty = faults.sessions is None or self._accepted < faults.sessions
        if faulty and faults.expire_after_s is not None:
            options["max_duration_s"] = faults.expire_after_s
        self._accepted += 1
        session = AgentSession(now=loop.time(), model=model, created_at=time.time(), **options)
        opened = loop.time()
        stall_at = opened + faults.stall_after_s if faulty and faults.stall_after_s else None
        drop_at = opened + faults.drop_after_s if faulty and faults.drop_after_s else None
        self.sessions.append(session)
        logger.info("local agent session %s opened (model %s)", session.config["id"], model)
        outbox: deque[dict[str, Any]] = deque(session.start())
        wake = asyncio.Event()
        self._wakes[id(session)] = (session, wake)

        sleeping_until = math.inf  # when the loop below wakes by itself

        async def read() -> None:
            try:
                async for message in ws:
                    out = session.receive(message, loop.time())
                    # Most messages are appends that cause nothing now: wake the loop
                    # only for something to send, or a release earlier than it sleeps to.
                    due = session.next_due()
                    if out or session.closed or (due is not None and due < sleeping_until):
                        outbox.extend(out)
                        wake.set()
            except ConnectionClosed:
                pass
            finally:
                wake.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                while outbox:
                    await ws.send(json.dumps(outbox.popleft(), separators=(",", ":")))
                if session.closed is not None:
                    await ws.close(*session.closed)
                    break
                if reader.done():
                    break
                now = loop.time()
                if drop_at is not None and now >= drop_at:
                    await self._drop(ws, session)
                    break
                if stall_at is not None and now >= stall_at:
                    await self._stall(ws, session, reader)
                    break
                due = min(
                    (t for t in (session.next_due(), stall_at, drop_at) if t is not None),
                    default=None,
                )
                sleeping_until = math.inf if due is None else due
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await wake.wait()
                wake.clear()
                outbox.extend(session.poll(loop.time()))
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._wakes.pop(id(session), None)
            self.closed_sessions.append(session)
            logger.info("local agent session %s closed", session.config["id"])

    async def _drop(self, ws: ServerConnection, session: AgentSession) -> None:
        code = self.faults.drop_code
        logger.info("local agent session %s dropped (%d, fault)", session.config["id"], code)
        if code == 1006:
            ws.transport.abort()  # no close frame: the peer sees 1006
        else:
            await ws.close(code, "internal error (fault)")

    async def _stall(
        self, ws: ServerConnection, session: AgentSession, reader: asyncio.Task[None]
    ) -> None:
        """Stop reading and answering; keep the socket until the peer gives up on it."""
        logger.info("local agent session %s stalled (fault)", session.config["id"])
        ws.transport.pause_reading()  # not even pings are answered now
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        # Named stalled only once reading has stopped: a ping sent after is not answered.
        self.stalled.append(session.config["id"])
        self._stalled_sockets.add(ws)
        # A peer that gives up closes or cuts the socket, which a paused transport may not
        # notice: let go after a while so a long-running agent does not keep it forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STALL_HOLD_S):
                await ws.wait_closed()
        self._stalled_sockets.discard(ws)
        ws.transport.abort()


def bearer_of(request: Request) -> str:
    """The key a handshake carries: ``Authorization: Bearer``, or (browsers cannot set
    headers) the ``openai-insecure-api-key.<key>`` subprotocol; "" when none."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].strip():
        return auth[7:].strip()
    for header in request.headers.get_all("Sec-WebSocket-Protocol"):
        for offered in header.split(","):
            key = offered.strip().removeprefix("openai-insecure-api-key.")
            if key != offered.strip() and key:
                return key
    return ""


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """A browser offers ``realtime`` (with its key beside it) and needs it chosen."""
    return Subprotocol("realtime") if "realtime" in offered else None


def _error(code: str | None, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": "event_handshake",
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": None,
            "event_id": None,
        },
    }


async def serve_local_agent(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_duration_s: float = 1800.0,
    speedup: float = 4.0,
    first_audio_delay_s: float = 0.0,
    chunk_ms: tuple[int, int] = (40, 400),
    greeting: bytes | None = None,
    seed: int | None = None,
    faults: Faults | None = None,
) -> LocalAgentServer:
    """Start the local agent on ``host:port`` (0: any free port); see ``.url``.

    ``faults`` switches on misbehaviour (also settable later on ``.faults``).
    """
    server = LocalAgentServer(
        host,
        {
            "max_duration_s": max_duration_s,
            "speedup": speedup,
            "first_audio_delay_s": first_audio_delay_s,
            "chunk_ms": chunk_ms,
            "greeting": greeting,
            "seed": seed,
        },
        faults,
    )
    await server._start(port)
    logger.info("local agent listening on %s", server.url)
    return server
