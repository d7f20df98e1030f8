"""Twilio REST calls, through the ``twilio`` SDK.

Owns: building the SDK client from ``Settings`` (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, and
TWILIO_API_BASE_URL, which points the SDK's ``api`` domain at a stand-in such as
``bridge.sim.twilio_cloud``), the async helpers that run the blocking SDK in a worker
thread, and the mapping of the SDK's errors (``TwilioRestException``, connection errors,
timeouts) to ``TwilioApiError`` with a message in plain words.

Must not touch: call state, media-stream TwiML (``twiml``), the CLI. Other modules may add
helpers here by appending. Never logs the auth token; the SDK's own request/response log
(which carries phone numbers) is kept below INFO.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TypeVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bridge.config import Settings
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger(__name__)

# The SDK logs every request and response body (numbers, TwiML) at INFO: keep it quiet.
_sdk_log = logging.getLogger("bridge.twilio_api.sdk")
_sdk_log.setLevel(logging.WARNING)

REQUEST_TIMEOUT_S = 10.0

T = TypeVar("T")


class TwilioApiError(BridgeError):
    """A Twilio REST request failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def rest_client(settings: Settings) -> Client:
    """An SDK client for the account in ``settings`` (raises ConfigError when unusable)."""
    missing = [
        name
        for name, value in (
            ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
            ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} must be set to use the Twilio REST API "
            "(transfers, outbound calls, number set-up)"
        )
    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=TwilioHttpClient(timeout=REQUEST_TIMEOUT_S, logger=_sdk_log),
        # Never fall back to os.environ: Settings is the one place that reads it.
        environment={"TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""},
    )
    if settings.twilio_api_base_url:
        client.api.base_url = settings.twilio_api_base_url
    return client


def describe(exc: BaseException, what: str) -> TwilioApiError:
    """``exc`` from the SDK (or its HTTP library) as a TwilioApiError about ``what``."""
    if isinstance(exc, TwilioRestException):
        code = f", Twilio error {exc.code}" if exc.code else ""
        reason = exc.msg or "no message"
        if exc.status == 401:
            reason = "the account SID or auth token was refused"
        return TwilioApiError(
            f"{what} failed: HTTP {exc.status}{code}: {reason}", status=exc.status, code=exc.code
        )
    if isinstance(exc, requests.Timeout):
        return TwilioApiError(f"{what} failed: Twilio did not answer in {REQUEST_TIMEOUT_S:g} s")
    if isinstance(exc, requests.RequestException):
        return TwilioApiError(f"{what} failed: could not reach Twilio ({type(exc).__name__})")
    return TwilioApiError(f"{what} failed: {type(exc).__name__}: {exc}")


async def run_sdk(what: str, fn: Callable[[], T]) -> T:
    """Run the blocking SDK call ``fn`` in a thread; its errors become TwilioApiError."""
    try:
        return await asyncio.to_thread(fn)
    except (TwilioException, requests.RequestException, ValueError) as exc:
        raise describe(exc, what) from None


async def update_call(
    settings: Settings,
    call_sid: str,
    *,
    twiml: str | None = None,
    status: str | None = None,
) -> None:
    """Redirect a live call to new TwiML, or end it (``status="completed"``)."""
    if twiml is None and status is None:
        raise ValueError("update_call needs twiml or status")
    client = rest_client(settings)
    kwargs: dict[str, str] = {}
    if twiml is not None:
        kwargs["twiml"] = twiml
    if status is not None:
        kwargs["status"] = status
    await run_sdk(f"Updating call {call_sid}", lambda: client.calls(call_sid).update(**kwargs))
    log.info("call %s updated through the Twilio REST API (%s)", call_sid, ", ".join(kwargs))


async def redirect_call(settings: Settings, call_sid: str, twiml: str) -> None:
    """Hand a live call over to ``twiml`` (``transfer_call``'s ``<Dial>``)."""
    await update_call(settings, call_sid, twiml=twiml)


# --- appended by the outbound/set-up work (bridge.outbound, bridge.ops) ----------------


def rest_errors(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with the SDK's list/page failures (a bare ``TwilioException("Unable to fetch
    page", response)``) raised as ``TwilioRestException``, so ``describe`` can say why."""

    def call() -> T:
        try:
            return fn()
        except TwilioRestException:
            raise
        except TwilioException as exc:
            response = exc.args[1] if len(exc.args) == 2 else None
            status = getattr(response, "status_code", None)
            if not isinstance(status, int):
                raise
            try:
                body = json.loads(getattr(response, "text", "") or "{}")
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            raise TwilioRestException(
                status, "", msg=str(body.get("message") or exc.args[0]), code=body.get("code")
            ) from None

    return call
