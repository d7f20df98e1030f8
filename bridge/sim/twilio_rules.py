"""Twilio's REST rules as data, for the stand-in ``bridge.sim.twilio_cloud``.

Owns: the parameters each resource accepts (as the twilio-python SDK 9.x sends them), the
JSON shapes of the Call and IncomingPhoneNumber resources, Twilio-like error bodies and
the field checks. No I/O here; it never imports the bridge's own modules.
https://www.twilio.com/docs/voice/api/call-resource
https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource
"""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

API = "/2010-04-01"


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


CALL_CREATE_PARAMS = _names(
    "To From Url Twiml ApplicationSid Method FallbackUrl FallbackMethod StatusCallback "
    "StatusCallbackEvent StatusCallbackMethod SendDigits Timeout Record RecordingChannels "
    "RecordingStatusCallback RecordingStatusCallbackMethod SipAuthUsername SipAuthPassword "
    "MachineDetection MachineDetectionTimeout RecordingStatusCallbackEvent Trim CallerId "
    "MachineDetectionSpeechThreshold MachineDetectionSpeechEndThreshold "
    "MachineDetectionSilenceTimeout AsyncAmd AsyncAmdStatusCallback "
    "AsyncAmdStatusCallbackMethod Byoc CallReason CallToken RecordingTrack TimeLimit"
)
CALL_UPDATE_PARAMS = _names(
    "Url Method Status FallbackUrl FallbackMethod StatusCallback StatusCallbackMethod "
    "Twiml TimeLimit"
)
NUMBER_UPDATE_PARAMS = _names(
    "AccountSid ApiVersion FriendlyName SmsApplicationSid SmsFallbackMethod SmsFallbackUrl "
    "SmsMethod SmsUrl StatusCallback StatusCallbackMethod VoiceApplicationSid "
    "VoiceCallerIdLookup VoiceFallbackMethod VoiceFallbackUrl VoiceMethod VoiceUrl "
    "EmergencyStatus EmergencyAddressSid TrunkSid VoiceReceiveMode IdentitySid AddressSid "
    "BundleSid"
)
NUMBER_LIST_PARAMS = _names("Beta FriendlyName PhoneNumber Origin PageSize Page PageToken")
METHOD_PARAMS = {"Method", "FallbackMethod", "StatusCallbackMethod", "VoiceMethod"}
METHOD_PARAMS |= {"VoiceFallbackMethod", "SmsMethod", "SmsFallbackMethod"}
METHOD_PARAMS |= {"AsyncAmdStatusCallbackMethod", "RecordingStatusCallbackMethod"}
LIVE = {"queued", "ringing", "in-progress"}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def call_resource(
    account_sid: str, sid: str, to: str, from_: str, status: str, direction: str
) -> dict[str, Any]:
    now = formatdate(usegmt=True)
    return {
        "sid": sid,
        "account_sid": account_sid,
        "parent_call_sid": None,
        "date_created": now,
        "date_updated": now,
        "to": to,
        "to_formatted": to,
        "from": from_,
        "from_formatted": from_,
        "phone_number_sid": None,
        "status": status,
        "start_time": None,
        "end_time": None,
        "duration": None,
        "price": None,
        "price_unit": "USD",
        "direction": direction,
        "answered_by": None,
        "api_version": "2010-04-01",
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": "0",
        "trunk_sid": None,
        "uri": f"{API}/Accounts/{account_sid}/Calls/{sid}.json",
        "subresource_uris": {},
    }


def number_resource(
    account_sid: str, sid: str, number: str, voice_url: str, friendly_name: str | None
) -> dict[str, Any]:
    now = formatdate(usegmt=True)
    return {
        "sid": sid,
        "account_sid": account_sid,
        "address_requirements": "none",
        "api_version": "2010-04-01",
        "beta": False,
        "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": now,
        "date_updated": now,
        "friendly_name": friendly_name or number,
        "phone_number": number,
        "origin": "twilio",
        "sms_url": "",
        "sms_method": "POST",
        "status_callback": "",
        "status_callback_method": "POST",
        "trunk_sid": None,
        "voice_application_sid": None,
        "voice_caller_id_lookup": False,
        "voice_fallback_method": "POST",
        "voice_fallback_url": None,
        "voice_method": "POST",
        "voice_url": voice_url,
        "voice_receive_mode": "voice",
        "status": "in-use",
        "uri": f"{API}/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json",
    }


# -- routing ------------------------------------------------------------------------


def allow(req: Any, methods: set[str]) -> None:
    if req.method not in methods:
        raise ApiError(405, 20004, "Method not allowed")


def known(fields: Iterable[str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ApiError(400, 20001, f"Unknown parameters: {', '.join(unknown)}")


def check_common(form: dict[str, str]) -> None:
    for key, value in form.items():
        if key in METHOD_PARAMS and value not in {"GET", "POST"}:
            raise ApiError(400, 21205, f"{key} must be GET or POST")
        if key.endswith(("Url", "StatusCallback")) and value:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise ApiError(400, 21205, f"{key} is not a valid URL: {value}")
    if "Twiml" in form:
        try:
            root = ET.fromstring(form["Twiml"])
        except ET.ParseError as exc:
            raise ApiError(400, 12100, f"Document parse failure: {exc}") from None
        if root.tag != "Response":
            raise ApiError(400, 12100, "Document parse failure: root must be <Response>")


def parse_int(raw: str, name: str, lo: int, hi: int) -> int:
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ApiError(400, 20001, f"Invalid {name}: {raw}")
    return int(raw)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
