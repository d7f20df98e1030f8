"""``bridge twilio numbers`` and ``bridge twilio setup``: the account's phone numbers.

Owns listing the account's incoming numbers (where their voice URL and status callback
point), pointing one at ``PUBLIC_URL`` (voice webhook ``/twilio/voice``, status callback
``/twilio/status``), and putting back what was there from the small JSON file ``setup``
writes before it changes anything. Everything goes through the ``twilio`` SDK
(``bridge.twilio_api``). Must not touch live calls or the server.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.outbound.place import STATUS_PATH, BadTarget, check_number
from bridge.twilio_api import rest_client, rest_errors, run_sdk
from twiml.voice import VOICE_PATH

FIELDS = ("voice_url", "voice_method", "status_callback", "status_callback_method")


@dataclass(frozen=True)
class Number:
    sid: str
    phone_number: str
    friendly_name: str
    voice_url: str
    voice_method: str
    status_callback: str
    status_callback_method: str

    def routing(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS}


def _number(record: Any) -> Number:
    def text(name: str) -> str:
        value = getattr(record, name, None)
        return "" if value is None else str(value)

    return Number(
        sid=text("sid"),
        phone_number=text("phone_number"),
        friendly_name=text("friendly_name"),
        voice_url=text("voice_url"),
        voice_method=text("voice_method"),
        status_callback=text("status_callback"),
        status_callback_method=text("status_callback_method"),
    )


async def list_numbers(settings: Settings) -> list[Number]:
    client = rest_client(settings)
    records = await run_sdk(
        "Listing the account's numbers",
        rest_errors(lambda: client.incoming_phone_numbers.list(limit=1000)),
    )
    return [_number(r) for r in records]


async def find_number(settings: Settings, phone_number: str) -> Number:
    phone_number = check_number(phone_number, "--number", sip=False)
    client = rest_client(settings)
    records = await run_sdk(
        f"Looking up {phone_number}",
        rest_errors(
            lambda: client.incoming_phone_numbers.list(phone_number=phone_number, limit=20)
        ),
    )
    for record in records:
        number = _number(record)
        if number.phone_number == phone_number:
            return number
    raise BadTarget(f"{phone_number} is not a number of this Twilio account")


async def update_number(settings: Settings, sid: str, routing: dict[str, str]) -> Number:
    client = rest_client(settings)
    record = await run_sdk(
        f"Updating number {sid}",
        lambda: client.incoming_phone_numbers(sid).update(**routing),
    )
    return _number(record)


def wanted_routing(settings: Settings) -> dict[str, str]:
    if not settings.public_url:
        raise ConfigError("PUBLIC_URL must be set: it is where the number will point")
    return {
        "voice_url": settings.public_url + VOICE_PATH,
        "voice_method": "POST",
        "status_callback": settings.public_url + STATUS_PATH,
        "status_callback_method": "POST",
    }


def undo_file(phone_number: str, directory: Path = Path(".")) -> Path:
    """Where ``setup`` keeps what it replaced: ``twilio-setup-15551234567.json``."""
    return directory / f"twilio-setup-{re.sub(r'[^0-9]', '', phone_number)}.json"


def describe_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """``voice_url: old → new`` lines, one per field that changes."""
    return [
        f"  {name}: {before.get(name) or '(none)'} → {after.get(name) or '(none)'}"
        for name in FIELDS
        if before.get(name, "") != after.get(name, "")
    ]


async def setup(settings: Settings, phone_number: str, save_to: Path) -> tuple[Number, list[str]]:
    """Point ``phone_number`` at PUBLIC_URL; keep what was there in ``save_to`` first."""
    wanted = wanted_routing(settings)
    number = await find_number(settings, phone_number)
    before = number.routing()
    changes = describe_changes(before, wanted)
    if not changes:
        return number, []
    saved = {
        "number": number.phone_number,
        "sid": number.sid,
        "saved_at": datetime.now(UTC).isoformat(),
        "previous": before,
        "set": wanted,
    }
    save_to.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    return await update_number(settings, number.sid, wanted), changes


async def restore(settings: Settings, saved_file: Path) -> tuple[Number, list[str]]:
    """Put back the routing ``setup`` saved in ``saved_file``."""
    try:
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        sid, previous = str(saved["sid"]), saved["previous"]
        routing = {name: str(previous.get(name) or "") for name in FIELDS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadTarget(f"{saved_file} is not a file 'bridge twilio setup' wrote: {exc}") from None
    client_side = await find_number(settings, str(saved["number"]))
    if client_side.sid != sid:
        raise BadTarget(f"{saved['number']} is no longer number {sid} of this account")
    changes = describe_changes(client_side.routing(), routing)
    number = await update_number(settings, sid, routing) if changes else client_side
    return number, changes


def as_dict(number: Number) -> dict[str, str]:
    return asdict(number)
