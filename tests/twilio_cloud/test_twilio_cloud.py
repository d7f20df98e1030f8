"""The Twilio REST stand-in, driven by the real twilio SDK through bridge.twilio_api."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.sim.twilio_cloud import TwilioCloud
from bridge.twilio_api import TwilioApiError, rest_client, update_call


@pytest.fixture
def cloud() -> Iterator[TwilioCloud]:
    with TwilioCloud() as c:
        yield c


def settings_for(cloud: TwilioCloud, token: str | None = None) -> Settings:
    return Settings(
        twilio_account_sid=cloud.account_sid,
        twilio_auth_token=token or cloud.auth_token,
        twilio_api_base_url=cloud.url,
    )


def test_settings_from_env_read_the_account_and_base_url():
    s = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": "AC123",
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9/",
            "TWILIO_AUTH_TOKEN": "t",
            "PUBLIC_URL": "https://x.example",
        },
        env_file=None,
    )
    assert s.twilio_account_sid == "AC123"
    assert s.twilio_api_base_url == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="TWILIO_API_BASE_URL"):
        Settings.from_env({"TWILIO_API_BASE_URL": "ftp://x"}, env_file=None)


def test_rest_client_needs_sid_and_token():
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"):
        rest_client(Settings())
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        rest_client(Settings(twilio_account_sid="AC1"))


def test_create_call_with_the_sdk(cloud):
    client = rest_client(settings_for(cloud))
    call = client.calls.create(
        to="+15550100",
        from_="+15550199",
        twiml="<Response><Say>hi</Say></Response>",
        status_callback="https://example.com/status",
        status_callback_event=["initiated", "answered"],
    )
    assert call.sid.startswith("CA") and call.status == "queued"
    assert call.to == "+15550100" and call.direction == "outbound-api"
    (req,) = cloud.requests
    assert req.method == "POST" and req.auth_ok and req.status == 201
    assert req.path == f"/2010-04-01/Accounts/{cloud.account_sid}/Calls.json"
    assert req.form["To"] == "+15550100" and req.form["From"] == "+15550199"
    assert req.form_lists["StatusCallbackEvent"] == ["initiated", "answered"]
    fetched = client.calls(call.sid).fetch()
    assert fetched.sid == call.sid


def test_create_call_needs_url_or_twiml(cloud):
    client = rest_client(settings_for(cloud))
    with pytest.raises(TwilioRestException) as info:
        client.calls.create(to="+15550100", from_="+15550199")
    assert info.value.status == 400 and info.value.code == 21205


def test_update_call_async_and_unknown_sid(cloud):
    sid = cloud.add_call()
    seen: list[tuple[str, dict[str, str]]] = []
    cloud.on_call_update.append(lambda s, form: seen.append((s, form)))
    twiml = "<Response><Dial><Number>+15550100</Number></Dial></Response>"
    asyncio.run(update_call(settings_for(cloud), sid, twiml=twiml))
    assert seen == [(sid, {"Twiml": twiml})]
    assert [r.form for r in cloud.call_updates(sid)] == [{"Twiml": twiml}]
    asyncio.run(update_call(settings_for(cloud), sid, status="completed"))
    assert cloud.calls[sid]["status"] == "completed"
    with pytest.raises(TwilioApiError, match="HTTP 400") as redirect:
        asyncio.run(update_call(settings_for(cloud), sid, twiml=twiml))
    assert redirect.value.code == 21220
    with pytest.raises(TwilioApiError, match="HTTP 404"):
        asyncio.run(update_call(settings_for(cloud), "CA" + "0" * 32, status="completed"))


def test_update_refuses_bad_status_and_bad_twiml(cloud):
    sid = cloud.add_call()
    client = rest_client(settings_for(cloud))
    with pytest.raises(TwilioRestException) as info:
        client.calls(sid).update(status="busy")
    assert info.value.code == 21218
    with pytest.raises(TwilioRestException) as info:
        client.calls(sid).update(twiml="<Response><Dial>")
    assert info.value.code == 12100
    assert cloud.calls[sid]["status"] == "in-progress"


def test_wrong_token_is_401_and_never_in_the_message(cloud):
    sid = cloud.add_call()
    settings = settings_for(cloud, token="wrong-token-xyz")
    with pytest.raises(TwilioApiError) as info:
        asyncio.run(update_call(settings, sid, status="completed"))
    assert info.value.status == 401
    assert "refused" in str(info.value) and "wrong-token-xyz" not in str(info.value)
    assert cloud.requests[-1].auth_ok is False
    assert cloud.calls[sid]["status"] == "in-progress"


def test_injected_failure_then_success(cloud):
    sid = cloud.add_call()
    cloud.fail_next(500)
    with pytest.raises(TwilioApiError, match="HTTP 500"):
        asyncio.run(update_call(settings_for(cloud), sid, status="completed"))
    asyncio.run(update_call(settings_for(cloud), sid, status="completed"))
    assert [r.status for r in cloud.requests] == [500, 200]


def test_unreachable_twilio_is_a_clear_error():
    with TwilioCloud() as gone:
        settings = settings_for(gone)
    with pytest.raises(TwilioApiError, match="could not reach Twilio"):
        asyncio.run(update_call(settings, "CA" + "1" * 32, status="completed"))


def _raw(cloud: TwilioCloud, method: str, path: str, form: str = "") -> tuple[int, Any]:
    auth = base64.b64encode(f"{cloud.account_sid}:{cloud.auth_token}".encode()).decode()
    request = urllib.request.Request(
        cloud.url + path,
        data=form.encode() if form else None,
        method=method,
        headers={
            "Authorization": f"Basic {auth}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_unknown_parameters_wrong_method_and_other_account(cloud):
    sid = cloud.add_call()
    base = f"/2010-04-01/Accounts/{cloud.account_sid}"
    status, body = _raw(cloud, "POST", f"{base}/Calls/{sid}.json", "Twiml=x&Colour=red")
    assert status == 400 and body["code"] == 20001 and "Colour" in body["message"]
    assert body["more_info"].endswith("/20001") and body["status"] == 400
    status, body = _raw(cloud, "DELETE", f"{base}/Calls/{sid}.json")
    assert status == 405
    status, body = _raw(cloud, "GET", f"/2010-04-01/Accounts/AC{'9' * 32}/Calls/{sid}.json")
    assert status == 404
    assert cloud.calls[sid]["status"] == "in-progress"


def test_numbers_list_pages_and_update(cloud):
    sids = [cloud.add_number(f"+1555010{i:04d}") for i in range(5)]
    cloud.page_size = 2
    client = rest_client(settings_for(cloud))
    numbers = client.incoming_phone_numbers.list()
    assert [n.sid for n in numbers] == sids
    assert [r.query.get("Page", "0") for r in cloud.requests] == ["0", "1", "2"]
    only = client.incoming_phone_numbers.list(phone_number="+15550100003")
    assert [n.sid for n in only] == [sids[3]]
    updated = client.incoming_phone_numbers(sids[0]).update(
        voice_url="https://bridge.example/twilio/voice",
        voice_method="POST",
        status_callback="https://bridge.example/twilio/status",
        status_callback_method="POST",
    )
    assert updated.voice_url == "https://bridge.example/twilio/voice"
    assert cloud.numbers[sids[0]]["status_callback"] == "https://bridge.example/twilio/status"
    with pytest.raises(TwilioRestException) as info:
        client.incoming_phone_numbers(sids[1]).update(voice_method="PATCH")
    assert info.value.status == 400


def test_wait_for_async_sees_a_request_made_meanwhile(cloud):
    sid = cloud.add_call()

    async def main() -> None:
        waiting = asyncio.create_task(
            cloud.wait_for_async(lambda r: r.form.get("Status") == "completed")
        )
        await update_call(settings_for(cloud), sid, status="completed")
        request = await waiting
        assert request.path.endswith(f"/Calls/{sid}.json")

    asyncio.run(main())
