"""The page and its files, served in front of the bridge's app."""

import asyncio

import httpx
import pytest

from bridge.agents import Agent
from bridge.app import create_app
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.server import services_of
from bridge.softphone.pages import STATIC, vendor_path


def get(settings, *paths):
    async def main():
        async with (
            running_bridge(settings) as bridge,
            httpx.AsyncClient(base_url=bridge.base_url, timeout=30.0) as client,
        ):
            return [await client.get(p) for p in paths]

    return asyncio.run(main())


def test_page_and_assets():
    page, js, css, capture, playback, missing = get(
        Settings(),
        "/softphone",
        "/softphone/static/softphone.js",
        "/softphone/static/softphone.css",
        "/softphone/static/capture-worklet.js",
        "/softphone/static/playback-worklet.js",
        "/softphone/static/nope.js",
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="call"' in page.text and 'id="hangup"' in page.text
    assert "/softphone/vendor/socket.io.min.js" in page.text
    assert "cdn" not in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "*" not in csp
    assert page.headers["permissions-policy"] == "microphone=(self)"
    for asset in (js, css, capture, playback):
        assert asset.status_code == 200
        assert "content-security-policy" in asset.headers
    assert "javascript" in js.headers["content-type"]
    assert 'registerProcessor("capture"' in capture.text
    assert 'registerProcessor("playback"' in playback.text
    assert "ScriptProcessor" not in js.text  # AudioWorklet only
    assert missing.status_code == 404


def test_socketio_client_comes_from_node_modules():
    path = vendor_path()
    if path is None:
        pytest.fail("node_modules/socket.io-client is missing: run `npm ci` (make setup-test)")
    (vendor,) = get(Settings(), "/softphone/vendor/socket.io.min.js")
    assert vendor.status_code == 200
    assert "javascript" in vendor.headers["content-type"]
    assert vendor.content == path.read_bytes()


def test_config_lists_agents_only_when_open():
    agents = (Agent(name="front"), Agent(name="support"))
    (open_,) = get(Settings(agents=agents, default_agent="front"), "/softphone/config")
    assert open_.json()["agents"] == ["front", "support"]
    assert open_.json()["default_agent"] == "front"
    assert open_.json()["token_required"] is False
    (closed,) = get(
        Settings(agents=agents, default_agent="front", softphone_token="t"), "/softphone/config"
    )
    assert closed.json()["agents"] is None and closed.json()["token_required"] is True


def test_the_rest_of_the_app_is_untouched():
    health, nothing = get(Settings(), "/healthz", "/softphonex")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert nothing.status_code == 404
    app = create_app(Settings())
    assert services_of(app).settings.softphone_max_sessions == 50
    assert (STATIC / "index.html").is_file()
