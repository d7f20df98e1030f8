"""The simulator's reading of TwiML and its choice of where to connect."""

import pytest

from bridge.sim.errors import StreamRejected, WebhookRejected
from bridge.sim.webhook import connect_url, parse_twiml, sign, voice_params

REQUEST_URL = "https://bridge.example.test/twilio/voice"


def twiml(stream: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>{stream}</Connect></Response>'


def test_reads_stream_url_and_parameters() -> None:
    target = parse_twiml(
        twiml(
            '<Stream url="wss://bridge.example.test/twilio/media">'
            '<Parameter name="token" value="abc"/><Parameter name="agent" value="echo"/></Stream>'
        ),
        request_url=REQUEST_URL,
        require_wss=True,
    )
    assert target.url == "wss://bridge.example.test/twilio/media"
    assert target.parameters == {"token": "abc", "agent": "echo"}
    assert target.violations == []


def test_relative_stream_url_resolves_against_the_webhook() -> None:
    target = parse_twiml(
        twiml('<Stream url="/twilio/media"/>'), request_url=REQUEST_URL, require_wss=True
    )
    assert target.url == "wss://bridge.example.test/twilio/media"


def test_overlong_parameter_is_a_violation() -> None:
    target = parse_twiml(
        twiml(f'<Stream url="wss://h/m"><Parameter name="token" value="{"x" * 495}"/></Stream>'),
        request_url=REQUEST_URL,
        require_wss=True,
    )
    assert len(target.violations) == 1


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("<Response><Say>hi</Say></Response>", WebhookRejected),
        ("<Response><Start><Stream url='wss://h/m'/></Start></Response>", WebhookRejected),
        ("not xml", WebhookRejected),
        (twiml('<Stream url="wss://h/m?token=1"/>'), StreamRejected),
        (twiml('<Stream url="ws://h/m"/>'), StreamRejected),
    ],
)
def test_twiml_twilio_cannot_run_is_refused(document: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_twiml(document, request_url=REQUEST_URL, require_wss=True)


def test_public_host_is_redirected_to_the_local_server() -> None:
    public = "https://bridge.example.test"
    assert (
        connect_url("wss://bridge.example.test/twilio/media", "http://127.0.0.1:9000", public)
        == "ws://127.0.0.1:9000/twilio/media"
    )
    assert connect_url("ws://127.0.0.1:9000/twilio/media", "http://127.0.0.1:9000", None) == (
        "ws://127.0.0.1:9000/twilio/media"
    )


def test_signature_matches_twilio_validator() -> None:
    from twilio.request_validator import RequestValidator

    params = voice_params("CA1", "AC1", "+15550001111", "+15550002222")
    assert set(params) == {
        "AccountSid",
        "ApiVersion",
        "CallSid",
        "CallStatus",
        "Direction",
        "From",
        "To",
    }
    signature = sign("secret", REQUEST_URL, params)
    assert RequestValidator("secret").validate(REQUEST_URL, params, signature)
    assert not RequestValidator("other").validate(REQUEST_URL, params, signature)
