import base64
import hashlib
import hmac

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator

from bridge.config import Settings
from bridge.errors import SecurityError
from twiml.security import (
    StreamTokenError,
    check_stream_token,
    make_stream_token,
    public_ws_url,
    twilio_ws_signature_ok,
    validate_twilio_signature,
)

SECRET = "0123456789abcdef" * 4
CALL = "CA" + "ab" * 16
NOW = 1_700_000_000.0
AUTH = "twilio-auth-token"
PUBLIC = "https://abc.ngrok.app"


def reason(secret: str, call_sid: str, token: object, now: float) -> str:
    with pytest.raises(StreamTokenError) as info:
        check_stream_token(secret, call_sid, token, now)  # type: ignore[arg-type]
    assert isinstance(info.value, SecurityError)
    return info.value.reason


# --- stream tokens -------------------------------------------------------------------


def test_token_round_trip_within_ttl():
    token = make_stream_token(SECRET, CALL, NOW, 300)
    assert "?" not in token and "&" not in token and len(token) < 200
    check_stream_token(SECRET, CALL, token, NOW)
    check_stream_token(SECRET, CALL, token, NOW + 299)


def test_token_expires():
    token = make_stream_token(SECRET, CALL, NOW, 300)
    check_stream_token(SECRET, CALL, token, NOW + 300)
    assert reason(SECRET, CALL, token, NOW + 301) == "expired"


def test_token_for_another_call_is_refused():
    token = make_stream_token(SECRET, CALL, NOW, 300)
    assert reason(SECRET, "CA" + "cd" * 16, token, NOW) == "wrong_call"
    # A call sid that merely starts like the token's one is still another call.
    assert reason(SECRET, CALL[:-1], token, NOW) == "wrong_call"


def test_token_signed_with_another_secret_is_refused():
    token = make_stream_token("another secret", CALL, NOW, 300)
    assert reason(SECRET, CALL, token, NOW) == "bad_signature"


def test_tampered_payload_is_refused():
    token = make_stream_token(SECRET, CALL, NOW, 300)
    payload_b64, mac_b64 = token.split(".")
    payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
    # Stretch the expiry by a day, keep the signature.
    sid, expiry = payload.decode().rsplit(".", 1)
    forged = f"{sid}.{int(expiry) + 86400}".encode()
    forged_b64 = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    assert reason(SECRET, CALL, f"{forged_b64}.{mac_b64}", NOW) == "bad_signature"


def test_tampered_signature_is_refused():
    token = make_stream_token(SECRET, CALL, NOW, 300)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert reason(SECRET, CALL, flipped, NOW) == "bad_signature"


def test_signature_from_another_token_is_refused():
    mine = make_stream_token(SECRET, CALL, NOW, 300)
    theirs = make_stream_token(SECRET, "CA" + "cd" * 16, NOW, 300)
    spliced = mine.split(".")[0] + "." + theirs.split(".")[1]
    assert reason(SECRET, CALL, spliced, NOW) == "bad_signature"


@pytest.mark.parametrize(
    "token",
    [None, "", "nodot", "a.b.c", "!!!!.####", "abc=.def", "A" * 600 + ".x", "é.é"],
)
def test_malformed_tokens(token):
    assert reason(SECRET, CALL, token, NOW) == "malformed"


def test_payload_without_expiry_is_malformed_even_when_signed():
    payload = CALL.encode()
    mac = hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()
    token = (
        base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    )
    assert reason(SECRET, CALL, token, NOW) == "malformed"


def test_token_needs_a_secret():
    with pytest.raises(ValueError):
        make_stream_token("", CALL, NOW, 300)
    with pytest.raises(ValueError):
        check_stream_token("", CALL, "x.y", NOW)


# --- Twilio request signatures ------------------------------------------------------

# The worked example of https://www.twilio.com/docs/usage/webhooks/webhooks-security
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_documented_example_signature():
    assert validate_twilio_signature("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_signature_is_hmac_sha1_over_url_and_sorted_params():
    text = DOC_URL + "".join(k + v for k, v in sorted(DOC_PARAMS.items()))
    digest = hmac.new(b"12345", text.encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() == DOC_SIGNATURE


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("12345", DOC_URL, DOC_PARAMS, None),
        ("12345", DOC_URL, DOC_PARAMS, ""),
        ("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-1]),
        ("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE),
        ("12345", DOC_URL.replace("https", "http"), DOC_PARAMS, DOC_SIGNATURE),
        ("12345", "https://mycompany.com/myapp.php", DOC_PARAMS, DOC_SIGNATURE),
        ("12345", DOC_URL, {**DOC_PARAMS, "Digits": "9999"}, DOC_SIGNATURE),
        ("12345", DOC_URL, {**DOC_PARAMS, "Extra": "1"}, DOC_SIGNATURE),
    ],
)
def test_signature_mismatches(token, url, params, signature):
    assert not validate_twilio_signature(token, url, params, signature)


def test_signature_with_explicit_default_port_is_accepted():
    # Twilio is inconsistent about :443 in what it signs; the validator tries both.
    signature = RequestValidator(AUTH).compute_signature(
        "https://abc.ngrok.app:443/twilio/voice", {"CallSid": CALL}
    )
    assert validate_twilio_signature(
        AUTH, "https://abc.ngrok.app/twilio/voice", {"CallSid": CALL}, signature
    )


# --- Media Streams handshake --------------------------------------------------------

WSS_URL = "wss://abc.ngrok.app/twilio/media"


def signed_settings(**overrides: object) -> Settings:
    fields: dict[str, object] = {
        "public_url": PUBLIC,
        "twilio_auth_token": AUTH,
        "stream_token_secret": SECRET,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


def test_public_ws_url():
    assert public_ws_url(PUBLIC) == WSS_URL
    assert public_ws_url("https://example.com/bridge/") == "wss://example.com/bridge/twilio/media"
    assert public_ws_url("http://localhost:8080", "/x") == "ws://localhost:8080/x"
    with pytest.raises(ValueError):
        public_ws_url("ftp://example.com")


def test_ws_handshake_signature_ok():
    signature = RequestValidator(AUTH).compute_signature(WSS_URL, {})
    settings = signed_settings()
    assert twilio_ws_signature_ok(settings, {"X-Twilio-Signature": signature})
    assert twilio_ws_signature_ok(settings, {"x-twilio-signature": signature})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": ""},
        {"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        # Signed by someone who knows another auth token.
        {"X-Twilio-Signature": RequestValidator("other").compute_signature(WSS_URL, {})},
        # Signed over the https URL, or another path: not what Twilio signs for the socket.
        {
            "X-Twilio-Signature": RequestValidator(AUTH).compute_signature(
                "https://abc.ngrok.app/twilio/media", {}
            )
        },
        {
            "X-Twilio-Signature": RequestValidator(AUTH).compute_signature(
                "wss://abc.ngrok.app/twilio/other", {}
            )
        },
    ],
)
def test_ws_handshake_signature_forged(headers):
    assert not twilio_ws_signature_ok(signed_settings(), headers)


def test_ws_handshake_without_token_configured_is_allowed():
    assert twilio_ws_signature_ok(signed_settings(twilio_auth_token=None), {})


def test_ws_handshake_with_token_but_no_public_url_fails_closed():
    signature = RequestValidator(AUTH).compute_signature(WSS_URL, {})
    settings = signed_settings(public_url=None)
    assert not twilio_ws_signature_ok(settings, {"X-Twilio-Signature": signature})


def test_ws_handshake_through_starlette_headers():
    """The check works on a real upgrade request seen as ws://testserver behind a proxy."""
    settings = signed_settings()

    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"ok": twilio_ws_signature_ok(settings, websocket.headers)})
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/twilio/media", media)])
    good = RequestValidator(AUTH).compute_signature(WSS_URL, {})
    verdicts = []
    with TestClient(app) as client:
        for signature in (good, good[::-1]):
            with client.websocket_connect(
                "/twilio/media", headers={"X-Twilio-Signature": signature}
            ) as ws:
                verdicts.append(ws.receive_json()["ok"])
    assert verdicts == [True, False]
