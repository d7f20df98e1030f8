"""The local agent's REST side: ephemeral client secrets and speech, over plain HTTP/1.1.

The Realtime socket (``bridge.local_agent.server``) cannot take a request body, so these two
endpoints of the service have their own small listener (h11 over asyncio streams):

    POST /v1/realtime/client_secrets  {expires_after?: {anchor, seconds}, session?}
                                      → {value: "ek_…", expires_at, session}
    POST /v1/audio/speech             {model, input, voice, response_format?: wav | pcm}
                                      → audio (24 kHz PCM16 mono: WAV, or raw for "pcm")

Both need a bearer. A minted secret (:class:`ClientSecrets`) opens a Realtime session on
this agent until it expires, and is refused after (as the service does). Speech is not
synthesised: each word becomes a tone burst as long as the word (60 ms a letter), pitched
by the voice, with pauses between words and longer ones at sentence ends, an honest
stand-in whose timing follows the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import secrets
import time
import wave
from collections.abc import Callable
from typing import Any

import h11
import numpy as np

from bridge.local_agent.session_config import check_session_update, default_session, merge_session

RATE = 24000
MAX_BODY = 1 << 20
MAX_INPUT_CHARS = 4096
SPEECH_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)
_PREFIX = "ek_"


class ClientSecrets:
    """Secrets minted here, and when each expires (Unix seconds; ``clock`` for tests)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.minted = 0
        self._expiry: dict[str, float] = {}

    def mint(self, seconds: int) -> tuple[str, int]:
        now = self.clock()
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}  # forget the old
        value = _PREFIX + secrets.token_urlsafe(24)
        expires_at = int(now + seconds)
        self._expiry[value] = expires_at
        self.minted += 1
        return value, expires_at

    def refusal(self, bearer: str) -> str | None:
        """Why a Realtime handshake with ``bearer`` is refused, or None (not a secret of
        ours: the key check stays as it was)."""
        if not bearer.startswith(_PREFIX):
            return None
        expires_at = self._expiry.get(bearer)
        if expires_at is None:
            return "Invalid ephemeral key."
        if self.clock() >= expires_at:
            return "Ephemeral key has expired."
        return None


class RestServer:
    """The HTTP listener; ``url`` is the REST base (``…/v1``)."""

    def __init__(self, host: str, secrets_: ClientSecrets) -> None:
        self.host = host
        self.secrets = secrets_
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, port)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/v1"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            async with asyncio.timeout(30):
                request, body = await _read_request(conn, reader)
                status, headers, payload = self.answer(request, body)
            out = conn.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        *headers,
                        ("Content-Length", str(len(payload))),
                        ("Connection", "close"),
                    ],
                )
            )
            writer.write((out or b"") + (conn.send(h11.Data(data=payload)) or b""))
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError, _TooLarge):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, request: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body for one request."""
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if request.method != b"POST" or path not in (
            "/v1/realtime/client_secrets",
            "/v1/audio/speech",
        ):
            return _error(
                404, "not_found", f"Unknown request URL: {request.method.decode()} {path}"
            )
        bearer = dict(request.headers).get(b"authorization", b"").decode("latin-1")
        if not bearer.startswith("Bearer ") or not bearer[7:].strip():
            return _error(401, None, "Missing bearer authentication in header")
        if bearer[7:].strip().startswith(_PREFIX):
            return _error(401, "invalid_api_key", "Ephemeral keys may not call this endpoint.")
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, None, "We could not parse the JSON body of your request.")
        if not isinstance(data, dict):
            return _error(400, None, "The body must be a JSON object.")
        if path.endswith("client_secrets"):
            return self._client_secret(data)
        return _speech(data)

    def _client_secret(self, data: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        expires = data.get("expires_after") or {}
        seconds = expires.get("seconds", 600) if isinstance(expires, dict) else None
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
            return _error(
                400, "invalid_value", "expires_after.seconds must be between 10 and 7200."
            )
        session = data.get("session") or {"type": "realtime"}
        if not isinstance(session, dict):
            return _error(400, "invalid_type", "session must be an object.")
        problem = check_session_update(session)
        if problem is not None:
            return _error(400, problem.code, problem.message, problem.param)
        model = session.get("model") or "gpt-realtime"
        effective = merge_session(default_session("sess_" + secrets.token_hex(10), model), session)
        value, expires_at = self.secrets.mint(seconds)
        return _json(200, {"value": value, "expires_at": expires_at, "session": effective})


def _speech(data: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    text, voice = data.get("input"), data.get("voice")
    fmt = data.get("response_format", "mp3")
    if not isinstance(data.get("model"), str):
        return _error(400, "missing_required_parameter", "Missing required parameter: 'model'.")
    if not isinstance(text, str) or not text.strip():
        return _error(400, "missing_required_parameter", "Missing required parameter: 'input'.")
    if len(text) > MAX_INPUT_CHARS:
        return _error(
            400, "string_above_max_length", f"input is over {MAX_INPUT_CHARS} characters."
        )
    if voice not in SPEECH_VOICES:
        return _error(400, "invalid_value", f"Invalid value for 'voice': {str(voice)[:40]!r}.")
    if fmt not in ("wav", "pcm"):
        # The service also speaks mp3, opus, aac and flac; this stand-in has no encoder.
        return _error(
            400, "unsupported_value", f"response_format {str(fmt)[:20]!r} is not available locally."
        )
    pcm = render(text, str(voice))
    if fmt == "pcm":
        return 200, [("Content-Type", "audio/pcm")], pcm
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return 200, [("Content-Type", "audio/wav")], out.getvalue()


def render(text: str, voice: str) -> bytes:
    """PCM16 24 kHz: a tone burst per word (60 ms a letter), pauses between (module doc)."""
    pitch = 180.0 + 20.0 * sorted(SPEECH_VOICES).index(voice)
    parts: list[np.ndarray] = []
    for word in re.findall(r"[^\s]+", text):
        letters = sum(ch.isalnum() for ch in word) or 1
        n = int(RATE * min(0.06 * letters, 0.8))
        t = np.arange(n) / RATE
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        parts.append(0.3 * envelope * np.sin(2 * np.pi * pitch * t))
        pause = 0.3 if word[-1] in ".!?" else 0.08
        parts.append(np.zeros(int(RATE * pause)))
    audio = np.concatenate(parts) if parts else np.zeros(0)
    return (audio * 32767).astype("<i2").tobytes()


class _TooLarge(Exception):
    pass


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before the request ended")


def _json(status: int, payload: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps(payload).encode()


def _error(
    status: int, code: str | None, message: str, param: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return _json(status, {"error": error})
