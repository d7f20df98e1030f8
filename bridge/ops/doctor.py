"""``bridge doctor``: check a real deployment and say in words what is wrong.

Owns the checks, each one line ``OK``/``WARN``/``FAIL`` with what it saw and, when not OK,
a fix hint:

* public URL: ``GET PUBLIC_URL/healthz`` through the public URL (the tunnel), so it fails
  when the outside world cannot reach the bridge;
* Twilio: an authenticated REST request through the SDK (list one number), then a
  signature round trip: a status callback signed with our ``TWILIO_AUTH_TOKEN`` POSTed to
  ``PUBLIC_URL/twilio/status``; a 403 means the server checks with another token or URL;
* OpenAI: open a Realtime session at ``OPENAI_REALTIME_URL`` with the key, wait for
  ``session.created``, close it;
* clock: the ``Date`` headers of those answers against the local clock (WARN past
  ``SKEW_WARN_S``; stream tokens carry wall-clock expiry);
* port: can ``HOST:PORT`` be bound, or is it our own bridge answering there.

Exit status 1 when any check FAILs. Never prints a secret. Must not change anything: the
signed request it sends is a status callback of a call sid that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from websockets.exceptions import InvalidStatus

from bridge.ai.client import CONNECT_ERRORS, connect_realtime
from bridge.config import Settings
from bridge.outbound.place import STATUS_PATH
from bridge.twilio_api import TwilioApiError, rest_client, rest_errors, run_sdk
from twiml.security import SIGNATURE_HEADER

Level = Literal["OK", "WARN", "FAIL", "SKIP"]
SKEW_WARN_S = 5.0
HTTP_TIMEOUT_S = 10.0
PROBE_CALL_SID = "CA" + "d0c702" + "0" * 26  # a call that does not exist


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level:<4} {self.name}: {self.detail}"
        return text + (f"\n     fix: {self.fix}" if self.fix else "")


@dataclass
class _Dates:
    """(where, server Date - local time) of every answer that had a Date header."""

    seen: list[tuple[str, float]] = field(default_factory=list)

    def add(self, where: str, header: str | None) -> None:
        if not header:
            return
        with contextlib.suppress(TypeError, ValueError, IndexError):
            # Date has whole seconds: half a second either way is no skew at all.
            self.seen.append((where, parsedate_to_datetime(header).timestamp() - time.time()))


async def run_doctor(settings: Settings) -> list[Check]:
    dates = _Dates()
    checks = [await check_public_url(settings, dates)]
    checks += await check_twilio(settings, dates)
    checks.append(await check_openai(settings, dates))
    checks.append(check_clock(dates))
    checks.append(await check_port(settings))
    return checks


async def _get(url: str, wait_s: float = HTTP_TIMEOUT_S) -> tuple[int, dict[str, str], str]:
    timeout = aiohttp.ClientTimeout(total=wait_s)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.text()


async def check_public_url(settings: Settings, dates: _Dates) -> Check:
    name = "public URL"
    if not settings.public_url:
        return Check(
            "FAIL",
            name,
            "PUBLIC_URL is not set",
            "set PUBLIC_URL to the https:// "
            "address Twilio reaches the bridge at (e.g. your ngrok URL)",
        )
    url = settings.public_url + "/healthz"
    try:
        status, headers, body = await _get(url)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Check(
            "FAIL",
            name,
            f"{url} is not reachable ({type(exc).__name__}: {exc})"[:300],
            "start the bridge (bridge serve) and the tunnel, and check PUBLIC_URL is its "
            "current address",
        )
    dates.add("public URL", headers.get("Date"))
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status == 200 and isinstance(answer, dict) and answer.get("status") == "ok":
        return Check("OK", name, f"{url} answers (calls live: {answer.get('calls', '?')})")
    if status == 503 and isinstance(answer, dict):
        return Check("WARN", name, f"{url} answers, but the bridge is {answer.get('status')}")
    return Check(
        "FAIL",
        name,
        f"{url} answered HTTP {status}, not the bridge's health check",
        "PUBLIC_URL reaches something else: point the tunnel at the bridge's HOST:PORT",
    )


async def check_twilio(settings: Settings, dates: _Dates) -> list[Check]:
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        missing = "TWILIO_ACCOUNT_SID" if settings.twilio_auth_token else "TWILIO_AUTH_TOKEN"
        return [
            Check(
                "FAIL",
                "Twilio credentials",
                f"{missing} is not set",
                "copy the Account SID and Auth Token from the Twilio console",
            )
        ]
    checks: list[Check] = []
    client = rest_client(settings)

    def capture(response: Any, *args: Any, **kwargs: Any) -> Any:
        dates.add("Twilio API", response.headers.get("Date"))
        return response

    client.http_client.request_hooks = {"response": [capture]}
    try:
        numbers = await run_sdk(
            "Listing numbers", rest_errors(lambda: client.incoming_phone_numbers.list(limit=1))
        )
        checks.append(
            Check(
                "OK",
                "Twilio auth token",
                "the Twilio REST API accepted the "
                f"account SID and auth token ({len(numbers)} number(s) seen)",
            )
        )
    except TwilioApiError as exc:
        if exc.status == 401:
            checks.append(
                Check(
                    "FAIL",
                    "Twilio auth token",
                    "Twilio refused TWILIO_AUTH_TOKEN (or TWILIO_ACCOUNT_SID): HTTP 401",
                    "copy the current Auth Token of this account from the console",
                )
            )
        else:
            checks.append(
                Check(
                    "FAIL",
                    "Twilio auth token",
                    str(exc),
                    "check the network, or TWILIO_API_BASE_URL if set",
                )
            )
    checks.append(await check_signature(settings))
    return checks


async def check_signature(settings: Settings) -> Check:
    """POST a status callback signed with our token to our own public URL."""
    from twilio.request_validator import RequestValidator

    name = "webhook signature"
    if not settings.public_url or not settings.twilio_auth_token:
        return Check("SKIP", name, "needs PUBLIC_URL and TWILIO_AUTH_TOKEN")
    url = settings.public_url + STATUS_PATH
    params = {
        "AccountSid": settings.twilio_account_sid or "",
        "CallSid": PROBE_CALL_SID,
        "CallStatus": "completed",
    }
    signature = RequestValidator(settings.twilio_auth_token).compute_signature(url, params)
    headers = {
        SIGNATURE_HEADER: str(signature),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=urlencode(params), headers=headers) as response,
        ):
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Check(
            "FAIL",
            name,
            f"could not POST {url} ({type(exc).__name__})",
            "make PUBLIC_URL reachable first (see the public URL line)",
        )
    if status == 403:
        return Check(
            "FAIL",
            name,
            f"the bridge at {url} refused a request signed with this TWILIO_AUTH_TOKEN (403)",
            "run the server with the same TWILIO_AUTH_TOKEN and PUBLIC_URL as Twilio uses",
        )
    if 200 <= status < 300:
        return Check(
            "OK",
            name,
            "a request signed with TWILIO_AUTH_TOKEN is accepted by the bridge at PUBLIC_URL",
        )
    return Check(
        "FAIL",
        name,
        f"{url} answered HTTP {status}",
        "PUBLIC_URL may point at another program or an old bridge version",
    )


async def check_openai(settings: Settings, dates: _Dates) -> Check:
    name = "OpenAI key"
    if not settings.openai_api_key:
        return Check(
            "SKIP",
            name,
            "OPENAI_API_KEY is not set: calls go to the built-in local agent (no real model)",
        )
    url = settings.openai_realtime_url
    try:
        ws = await connect_realtime(url, settings.openai_realtime_model, settings.openai_api_key)
    except CONNECT_ERRORS as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if isinstance(cause, InvalidStatus) and cause.response.status_code in (401, 403):
            return Check(
                "FAIL",
                name,
                f"{url} refused OPENAI_API_KEY (HTTP {cause.response.status_code})",
                "create a new key at platform.openai.com and set OPENAI_API_KEY",
            )
        return Check(
            "FAIL",
            name,
            f"cannot open a Realtime session at {url}: {type(cause).__name__}",
            "check OPENAI_REALTIME_URL and the network",
        )
    try:
        if ws.response is not None:
            dates.add("OpenAI", ws.response.headers.get("Date"))
        async with asyncio.timeout(HTTP_TIMEOUT_S):
            first = json.loads(await ws.recv())
    except (TimeoutError, ValueError, OSError) as exc:
        return Check("FAIL", name, f"the Realtime session opened but said nothing ({exc!r})")
    except Exception as exc:  # the socket closed: the service refused the session
        return Check(
            "FAIL",
            name,
            f"the Realtime session was closed at once: {exc}"[:300],
            "check the key's access to OPENAI_REALTIME_MODEL",
        )
    finally:
        await ws.close()
    kind = first.get("type") if isinstance(first, dict) else None
    if kind == "session.created":
        return Check("OK", name, f"a Realtime session opened and closed at {url}")
    message = first.get("error", {}).get("message", "") if isinstance(first, dict) else ""
    return Check(
        "FAIL",
        name,
        f"the Realtime service answered {kind!r} {message}"[:300],
        "check OPENAI_API_KEY and OPENAI_REALTIME_MODEL",
    )


def check_clock(dates: _Dates) -> Check:
    name = "clock"
    if not dates.seen:
        return Check("SKIP", name, "no answer carried a Date header to compare with")
    where, skew = max(dates.seen, key=lambda seen: abs(seen[1]))
    if abs(skew) > SKEW_WARN_S:
        ahead = "behind" if skew > 0 else "ahead of"
        return Check(
            "WARN",
            name,
            f"this machine's clock is {abs(skew):.0f} s {ahead} {where}",
            "turn on time synchronisation (NTP, e.g. systemd-timesyncd)",
        )
    return Check("OK", name, f"within {SKEW_WARN_S:g} s of {', '.join(w for w, _ in dates.seen)}")


async def check_port(settings: Settings) -> Check:
    name = "port"
    where = f"{settings.host}:{settings.port}"
    try:
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as sock:
            sock.bind((settings.host, settings.port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Check(
                "FAIL",
                name,
                f"cannot bind {where}: {exc.strerror}",
                "set HOST to an address of this machine, PORT to a free port",
            )
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        try:
            status, _, body = await _get(f"http://{host}:{settings.port}/healthz", 3.0)
            answer = json.loads(body)
            ours = status in (200, 503) and isinstance(answer, dict) and "calls" in answer
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            ours = False
        if ours:
            return Check("OK", name, f"the bridge is running on {where}")
        return Check(
            "FAIL",
            name,
            f"{where} is in use by another program",
            f"stop it (e.g. find it with: ss -ltnp 'sport = :{settings.port}') "
            "or set PORT to a free port",
        )
    return Check(
        "OK",
        name,
        f"{where} is free: the bridge is not running on this machine (bridge serve would bind it)",
    )
