import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from bridge.agents import Agent
from bridge.config import Settings
from bridge.errors import ConfigError
from twiml.security import StreamTokenError, check_stream_token
from twiml.voice import make_voice_endpoint, mask_number, voice_twiml

AUTH = "twilio-auth-token"
SECRET = "0123456789abcdef" * 4
PUBLIC = "https://abc.ngrok.app"
VOICE_URL = PUBLIC + "/twilio/voice"
NOW = 1_700_000_000.0
CALL = "CA" + "0f" * 16
CALLER = "+15551231234"
CALLED = "+15559876543"
FORM = {
    "AccountSid": "AC" + "11" * 16,
    "CallSid": CALL,
    "From": CALLER,
    "To": CALLED,
    "CallStatus": "ringing",
    "Direction": "inbound",
}


def make_settings(**overrides: object) -> Settings:
    fields: dict[str, object] = {
        "public_url": PUBLIC,
        "twilio_auth_token": AUTH,
        "stream_token_secret": SECRET,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


def client_for(settings: Settings, now: Callable[[], float] = lambda: NOW) -> TestClient:
    endpoint = make_voice_endpoint(settings, now=now)
    app = Starlette(routes=[Route("/twilio/voice", endpoint, methods=["POST"])])
    return TestClient(app)  # seen by the app as http://testserver


def sign(params: dict[str, str], url: str = VOICE_URL, token: str = AUTH) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def parse_twiml(text: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(text)
    assert root.tag == "Response"
    connect, *after = list(root)
    assert connect.tag == "Connect"
    # Only a spoken fallback may follow: Twilio says it if the bridge ends the stream.
    assert [e.tag for e in after] in ([], ["Say"])
    (stream,) = list(connect)
    assert stream.tag == "Stream"
    parameters = {}
    for parameter in stream:
        assert parameter.tag == "Parameter"
        assert parameter.attrib["name"] not in parameters
        parameters[parameter.attrib["name"]] = parameter.attrib["value"]
    return stream.attrib["url"], parameters


# --- the endpoint ---------------------------------------------------------------------


def test_signed_call_gets_connect_stream_twiml():
    with client_for(make_settings()) as client:
        response = client.post("/twilio/voice", data=FORM, headers=sign(FORM))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    url, parameters = parse_twiml(response.text)
    assert url == "wss://abc.ngrok.app/twilio/media"
    assert urlsplit(url).query == ""
    assert set(parameters) == {"From", "To", "CallSid", "agent", "token"}
    assert parameters["From"] == CALLER
    assert parameters["To"] == CALLED
    assert parameters["CallSid"] == CALL
    assert parameters["agent"] == "default"
    check_stream_token(SECRET, CALL, parameters["token"], NOW + 10)
    with pytest.raises(StreamTokenError):
        check_stream_token(SECRET, CALL, parameters["token"], NOW + 301)


def test_called_number_picks_the_agent():
    settings = make_settings(
        agents=(Agent(), Agent(name="sales", numbers=(CALLED,))), default_agent="default"
    )
    with client_for(settings) as client:
        response = client.post("/twilio/voice", data=FORM, headers=sign(FORM))
        other = {**FORM, "To": "+15550000000"}
        fallback = client.post("/twilio/voice", data=other, headers=sign(other))
    assert parse_twiml(response.text)[1]["agent"] == "sales"
    assert parse_twiml(fallback.text)[1]["agent"] == "default"


def test_sip_call():
    form = {
        **FORM,
        "From": "sip:alice@pbx.example.com",
        "To": "sip:support@bridge.sip.twilio.com;transport=tls",
        "SipCallId": "abc123@10.0.0.1",
    }
    settings = make_settings(agents=(Agent(), Agent(name="support", numbers=("support",))))
    with client_for(settings) as client:
        response = client.post("/twilio/voice", data=form, headers=sign(form))
    assert response.status_code == 200
    url, parameters = parse_twiml(response.text)
    assert url == "wss://abc.ngrok.app/twilio/media"
    assert parameters["From"] == "sip:alice@pbx.example.com"
    assert parameters["To"] == "sip:support@bridge.sip.twilio.com;transport=tls"
    assert parameters["agent"] == "support"
    check_stream_token(SECRET, CALL, parameters["token"], NOW)


def test_validates_against_public_url_behind_a_proxy():
    # The app sees http://testserver/twilio/voice; Twilio signed the ngrok URL.
    with client_for(make_settings()) as client:
        public = client.post("/twilio/voice", data=FORM, headers=sign(FORM))
        seen = client.post(
            "/twilio/voice", data=FORM, headers=sign(FORM, "http://testserver/twilio/voice")
        )
    assert public.status_code == 200
    assert seen.status_code == 403


def test_query_string_of_the_webhook_is_signed_too():
    url = VOICE_URL + "?tenant=a%20b"
    with client_for(make_settings()) as client:
        good = client.post("/twilio/voice?tenant=a%20b", data=FORM, headers=sign(FORM, url))
        bad = client.post("/twilio/voice?tenant=other", data=FORM, headers=sign(FORM, url))
    assert good.status_code == 200
    assert bad.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": ""},
        sign(FORM, token="someone-else"),
        sign(FORM, url="https://abc.ngrok.app/twilio/other"),
        sign({**FORM, "From": "+15550000000"}),
    ],
    ids=["missing", "empty", "forged", "wrong-url", "other-params"],
)
def test_bad_signature_gets_403_without_twiml(headers, caplog):
    caplog.set_level(logging.DEBUG)
    with client_for(make_settings()) as client:
        response = client.post("/twilio/voice", data=FORM, headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/plain")
    assert "<" not in response.text
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "twiml.voice"
    for record in caplog.records:
        text = record.getMessage()
        assert "5551231234" not in text and "5559876543" not in text


def test_missing_call_sid_is_400():
    form = {k: v for k, v in FORM.items() if k != "CallSid"}
    with client_for(make_settings()) as client:
        response = client.post("/twilio/voice", data=form, headers=sign(form))
    assert response.status_code == 400
    assert "<" not in response.text


def test_unsigned_mode_works_without_a_signature():
    with client_for(make_settings(twilio_auth_token=None)) as client:
        response = client.post("/twilio/voice", data=FORM)
        no_sid = client.post("/twilio/voice", data={"From": CALLER})
    assert response.status_code == 200
    url, parameters = parse_twiml(response.text)
    assert url == "wss://abc.ngrok.app/twilio/media"
    check_stream_token(SECRET, CALL, parameters["token"], NOW)
    assert no_sid.status_code == 400


def test_without_public_url_the_stream_url_follows_the_host():
    settings = make_settings(twilio_auth_token=None, public_url=None)
    with client_for(settings) as client:
        plain = client.post("/twilio/voice", data=FORM)
        evil = client.post("/twilio/voice", data=FORM, headers={"Host": "x.com/a?b=c"})
    assert parse_twiml(plain.text)[0] == "ws://testserver/twilio/media"
    assert evil.status_code == 400


def test_token_without_public_url_is_a_config_error():
    with pytest.raises(ConfigError):
        make_voice_endpoint(make_settings(public_url=None))


def test_withheld_caller_id_is_omitted():
    form = {**FORM, "From": ""}
    with client_for(make_settings()) as client:
        response = client.post("/twilio/voice", data=form, headers=sign(form))
    assert response.status_code == 200
    assert "From" not in parse_twiml(response.text)[1]


def test_phone_numbers_are_masked_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    with client_for(make_settings()) as client:
        assert client.post("/twilio/voice", data=FORM, headers=sign(FORM)).status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("twiml")]
    assert any(CALL in m for m in messages)
    assert any("***1234" in m for m in messages)
    for text in messages:
        assert CALLER not in text and CALLED not in text


def test_not_a_form_is_refused():
    with client_for(make_settings(twilio_auth_token=None)) as client:
        response = client.post("/twilio/voice", json=FORM)
    assert response.status_code == 415


def test_oversized_body_is_refused():
    form = {**FORM, "Junk": "x" * 20_000}
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}

    def chunks():  # no Content-Length: sent chunked, so the cap applies while reading
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    with client_for(make_settings(twilio_auth_token=None)) as client:
        declared = client.post("/twilio/voice", data=form)
        streamed = client.post("/twilio/voice", content=chunks(), headers=form_type)
    assert declared.status_code == 413
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    "body", ["&".join(f"f{i}=1" for i in range(300)), "CallSid=CA1&From=%FF%FE", "From=\xe9"]
)
def test_malformed_form_is_refused(body):
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    with client_for(make_settings(twilio_auth_token=None)) as client:
        response = client.post("/twilio/voice", content=body.encode("latin-1"), headers=form_type)
    assert response.status_code == 400


def test_form_decoding_matches_what_twilio_sends():
    body = "CallSid=" + CALL + "&From=%2B15551231234&To=sip%3Abob%40h.example&Caller=a+b"
    form_type = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    params = {"CallSid": CALL, "From": CALLER, "To": "sip:bob@h.example", "Caller": "a b"}
    with client_for(make_settings()) as client:
        response = client.post(
            "/twilio/voice", content=body.encode(), headers={**form_type, **sign(params)}
        )
    assert response.status_code == 200
    assert parse_twiml(response.text)[1]["To"] == "sip:bob@h.example"


def test_each_call_gets_its_own_token():
    clock = iter([NOW, NOW + 1])
    other = {**FORM, "CallSid": "CA" + "ee" * 16}
    with client_for(make_settings(), now=lambda: next(clock)) as client:
        first = parse_twiml(client.post("/twilio/voice", data=FORM, headers=sign(FORM)).text)
        second = parse_twiml(client.post("/twilio/voice", data=other, headers=sign(other)).text)
    assert first[1]["token"] != second[1]["token"]
    with pytest.raises(StreamTokenError):
        check_stream_token(SECRET, CALL, second[1]["token"], NOW)


# --- voice_twiml ----------------------------------------------------------------------


def test_the_fallback_is_said_after_the_stream_and_can_be_turned_off():
    text = voice_twiml(stream_url="wss://h/twilio/media", parameters={}, fallback="Bye now.")
    root = ET.fromstring(text)
    assert [e.tag for e in root] == ["Connect", "Say"]
    assert root[1].text == "Bye now."
    text = voice_twiml(stream_url="wss://h/twilio/media", parameters={}, fallback="")
    assert [e.tag for e in ET.fromstring(text)] == ["Connect"]


def test_voice_twiml_escapes_values():
    text = voice_twiml(
        stream_url="wss://h.example/twilio/media",
        parameters={"a": 'x&y<z>"q"', "b": "sip:u@h;transport=tls"},
    )
    assert parse_twiml(text) == (
        "wss://h.example/twilio/media",
        {"a": 'x&y<z>"q"', "b": "sip:u@h;transport=tls"},
    )


@pytest.mark.parametrize(
    "url",
    ["wss://h.example/twilio/media?token=x", "https://h.example/twilio/media", "wss://", "/x"],
)
def test_voice_twiml_refuses_bad_stream_urls(url):
    with pytest.raises(ValueError):
        voice_twiml(stream_url=url, parameters={})


@pytest.mark.parametrize(
    "parameters", [{"": "x"}, {"a": "x" * 500}, {"a": "bell\x07"}, {"a\x00": "x"}]
)
def test_voice_twiml_refuses_bad_parameters(parameters):
    with pytest.raises(ValueError):
        voice_twiml(stream_url="wss://h.example/twilio/media", parameters=parameters)


def test_mask_number():
    assert mask_number("+15551231234") == "***1234"
    assert mask_number("sip:+15551231234@trunk.example.com") == "sip:***1234@trunk.example.com"
    assert mask_number("sip:bob@pbx.example.com") == "sip:***@pbx.example.com"
    assert mask_number("") == "-"
    assert mask_number("266696687") == "***6687"
