"""The compose file's nginx config, run for real in front of two real bridges on loopback.

Two bridges share a Twilio auth token and a stream-token secret, as the compose file's
instances do, and nginx runs ``deploy/compose/nginx.conf`` with only its addresses changed
(``tests.deploy.proxy``). Through it: a whole simulated Twilio call (webhook and media
WebSocket), a WebSocket client route, Socket.IO long-polling that stays on one instance,
and a draining instance whose webhook 503 is retried on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge
from bridge.server import free_socket
from bridge.sim.caller import simulate_call
from bridge.sim.webhook import post_voice_webhook, voice_params
from tests.deploy.proxy import nginx_binary, running_nginx

PATIENCE_S = 45.0


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[tuple[str, list[RunningBridge]]]:
    """nginx in front of bridge-1 and bridge-2; yields (the proxy's URL, the bridges)."""
    nginx_binary()  # skip or fail before starting anything
    # The proxy's address is every bridge's PUBLIC_URL: signatures are made over it.
    probe = free_socket()
    port = probe.getsockname()[1]
    probe.close()
    public_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        public_url=public_url,
        twilio_auth_token=secrets.token_hex(16),
        stream_token_secret=secrets.token_hex(32),
    )
    async with (
        running_bridge(settings) as one,
        running_bridge(settings) as two,
        running_nginx({"bridge-1": _port(one), "bridge-2": _port(two)}, listen=port) as proxy_url,
    ):
        yield proxy_url, [one, two]


def _port(bridge: RunningBridge) -> int:
    return int(bridge.base_url.rsplit(":", 1)[1])


def _run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(main, PATIENCE_S))


def test_a_twilio_call_through_the_proxy():
    async def main() -> None:
        async with cluster() as (proxy_url, bridges):
            result = await simulate_call(
                proxy_url,
                np.zeros(8000, dtype=np.int16),
                public_url=proxy_url,
                auth_token=bridges[0].auth_token,
                hangup_after_s=2.0,
            )
            assert result.violations == []
            assert result.closed_by == "caller"
            # The greeting came back through the proxy's media WebSocket.
            assert np.abs(result.heard.astype(np.int32)).max() > 1000
            assert sum(b.services.metrics.calls_started for b in bridges) == 1

    _run(main())


def test_websocket_client_routes_are_upgraded():
    async def main() -> None:
        async with cluster() as (proxy_url, _):
            ws_url = proxy_url.replace("http://", "ws://")
            for path in ("/ws/voice", "/"):
                async with connect(ws_url + path, open_timeout=10) as ws:
                    assert ws.response is not None and ws.response.status_code == 101
            # A Socket.IO client on the WebSocket transport only.
            url = ws_url + "/socket.io/?EIO=4&transport=websocket"
            async with connect(url, open_timeout=10) as ws:
                opened = await ws.recv()
                assert isinstance(opened, str) and opened.startswith("0{"), opened

    _run(main())


def test_socketio_long_polling_stays_on_one_instance():
    async def main() -> None:
        async with cluster() as (proxy_url, _), httpx.AsyncClient(timeout=10) as client:
            base = proxy_url + "/socket.io/?EIO=4&transport=polling"
            opened = await client.get(base)
            assert opened.status_code == 200, opened.text
            sid = json.loads(opened.text[1:])["sid"]
            # Each poll is a new request: on the wrong instance it would be an unknown
            # session (400). Sent one at a time, a non-sticky balancer alternates.
            for _ in range(6):
                answer = await client.post(f"{base}&sid={sid}", content="3")
                assert answer.status_code == 200, answer.text

    _run(main())


def test_a_draining_instances_webhook_goes_to_the_other():
    async def main() -> None:
        async with cluster() as (proxy_url, bridges):
            bridges[0].services.draining = True
            for n in range(6):
                params = voice_params(f"CA{n:032x}", "AC" + "0" * 32, "+15550001111", "+15550002")
                twiml, violations = await post_voice_webhook(
                    proxy_url, params, public_url=proxy_url, auth_token=bridges[1].auth_token
                )
                assert violations == [] and "<Stream" in twiml

    _run(main())
