"""Twilio's side of the webhooks in these tests: signed POSTs, as Twilio sends them."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request

from bridge.sim.webhook import sign, voice_params
from tests.e2e import Rig

ACCOUNT = "AC" + "1" * 32
CALLER = "+15550001111"
CALLED = "+15550002222"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def post_signed(
    r: Rig,
    path: str,
    params: dict[str, str],
    *,
    signed_path: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """POST ``params`` to ``path`` (with its query), signed over the public URL of
    ``signed_path`` (default: the same path); (status, body)."""
    b = r.bridge
    signature = sign(b.auth_token or "", b.public_url + (signed_path or path), params)
    request = urllib.request.Request(
        b.base_url + path,
        data=urllib.parse.urlencode(params).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            **(headers or {}),
        },
        method="POST",
    )
    return await asyncio.to_thread(_send, request)


def _send(request: urllib.request.Request) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(request, timeout=15) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode()


async def voice(r: Rig, call_sid: str, caller: str = CALLER) -> str:
    """The voice webhook's TwiML for a new call from ``caller``."""
    status, body = await post_signed(
        r, "/twilio/voice", voice_params(call_sid, ACCOUNT, caller, CALLED)
    )
    assert status == 200, (status, body)
    return body


async def post_after(r: Rig, call_sid: str, action: str) -> str:
    """What Twilio does when ``<Connect>`` ends: request its action (relative to the voice
    webhook's URL) with the call's parameters; the TwiML it gets."""
    params = voice_params(call_sid, ACCOUNT, CALLER, CALLED) | {"CallStatus": "in-progress"}
    status, body = await post_signed(r, action, params)
    assert status == 200, (status, body)
    return body
