"""Place an outbound call: check the number, build its TwiML, ``calls.create``.

Owns the outbound TwiML (``<Connect><Stream>`` to our media socket, as the voice webhook
answers an inbound call, with the parameters ``bridge.outbound.amd`` reads) and the
``calls.create`` arguments (status callback, asynchronous AMD). Must not touch live calls
or the media socket.

The stream token: the call sid is only known once ``calls.create`` answers, after the
TwiML was sent, so an outbound call's token is minted for a one-time reference
(``out-<hex>``, the ``ref`` parameter) instead of the call sid; the media socket accepts
each reference once (``bridge.outbound.amd.token_subject``). A process that places calls
(``bridge call``) and the server that takes their streams must share
``STREAM_TOKEN_SECRET``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.privacy import mask_number
from bridge.twilio_api import rest_client, run_sdk
from twiml.security import MEDIA_PATH, make_stream_token, public_ws_url
from twiml.voice import AFTER_PATH, voice_twiml

logger = logging.getLogger(__name__)

STATUS_PATH = "/twilio/status"
AMD_PATH = "/twilio/amd"
REF_PREFIX = "out-"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP = re.compile(r"sips?:[^\s<>\"@]+@[^\s<>\"]+")


class BadTarget(ValueError):
    """A number, agent or caller ID that cannot be called; the message says why."""


@dataclass(frozen=True)
class Placed:
    call_sid: str
    to: str
    from_: str
    agent: str
    machine_detection: bool
    twiml: str


def check_number(value: str, what: str, *, sip: bool) -> str:
    """``value`` stripped, if it is E.164 (or a sip: URI when ``sip``); else BadTarget."""
    value = value.strip()
    if _E164.fullmatch(value) or (sip and _SIP.fullmatch(value)):
        return value
    allowed = "an E.164 number (+15551234567) or a sip: URI" if sip else "an E.164 number"
    raise BadTarget(f"{what} must be {allowed}, not {value[:40]!r}")


def outbound_twiml(
    settings: Settings, *, to: str, from_: str, agent: str, amd: bool, now: float
) -> str:
    """The TwiML the answered call runs: our media stream with a one-time token."""
    if not settings.public_url:
        raise ConfigError("PUBLIC_URL is required to place calls (Twilio connects back to it)")
    ref = REF_PREFIX + secrets.token_hex(16)
    token = make_stream_token(settings.stream_token_secret, ref, now, settings.stream_token_ttl_s)
    parameters = {
        "From": from_,
        "To": to,
        "agent": agent,
        "direction": "outbound",
        "amd": "1" if amd else "0",
        "ref": ref,
        "token": token,
    }
    return voice_twiml(
        stream_url=public_ws_url(settings.public_url, MEDIA_PATH),
        parameters=parameters,
        action=settings.public_url + AFTER_PATH + "?" + urlencode({"agent": agent}),
    )


def call_arguments(
    settings: Settings, *, to: str, from_: str, twiml: str, amd: bool
) -> dict[str, object]:
    """The keyword arguments of ``client.calls.create``."""
    base = settings.public_url or ""
    kwargs: dict[str, object] = {
        "to": to,
        "from_": from_,
        "twiml": twiml,
        "status_callback": base + STATUS_PATH,
        "status_callback_method": "POST",
        "status_callback_event": STATUS_EVENTS,
    }
    if amd:
        kwargs |= {
            "machine_detection": "DetectMessageEnd",
            "async_amd": "true",
            "async_amd_status_callback": base + AMD_PATH,
            "async_amd_status_callback_method": "POST",
        }
    return kwargs


def prepare(
    settings: Settings, to: str, *, agent: str | None, from_: str | None, amd: bool
) -> tuple[dict[str, object], str, str]:
    """Check the request; (calls.create arguments, the agent's name, the From number).

    Raises BadTarget (a bad number or agent) or ConfigError (settings missing)."""
    to = check_number(to, "to", sip=True)
    name = agent or settings.default_agent
    if settings.agent(name) is None:
        raise BadTarget(f"no agent named {name[:40]!r}")
    caller_id = from_ or settings.twilio_caller_id
    if not caller_id:
        raise BadTarget('no From number: pass --from / "from" or set TWILIO_CALLER_ID')
    caller_id = check_number(caller_id, "from", sip=False)
    twiml = outbound_twiml(settings, to=to, from_=caller_id, agent=name, amd=amd, now=time.time())
    return call_arguments(settings, to=to, from_=caller_id, twiml=twiml, amd=amd), name, caller_id


async def place_call(
    settings: Settings,
    to: str,
    *,
    agent: str | None = None,
    from_: str | None = None,
    amd: bool = False,
) -> Placed:
    """Create the call through the Twilio REST API. Raises BadTarget, ConfigError or
    ``TwilioApiError`` (Twilio refused or could not be reached)."""
    kwargs, name, caller_id = prepare(settings, to, agent=agent, from_=from_, amd=amd)
    client = rest_client(settings)
    call = await run_sdk("Placing the call", lambda: client.calls.create(**kwargs))
    sid = str(call.sid)
    logger.info(
        "outbound call %s placed to %s (agent %r%s)",
        sid,
        mask_number(str(kwargs["to"])),
        name,
        ", answering-machine detection" if amd else "",
    )
    return Placed(sid, str(kwargs["to"]), caller_id, name, amd, str(kwargs["twiml"]))
