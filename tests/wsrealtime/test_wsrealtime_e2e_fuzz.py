"""Fuzzed ``/ws/realtime`` clients beside a good one, over real loopback sockets.

The bridge and the local agent (standing in for OpenAI's REST endpoints too) run on a
loop in a background thread (``tests.proxy.test_proxy_e2e_fuzz.serving``); Hypothesis runs
in the test's thread. Each example connects one more client and sends it generated frames
(JSON of any shape, near-valid requests, garbage text, binary), then a request of an
unknown type as a marker: each frame gets its reply in order, an error or what it asked
for. The bridge must log no error; the good client, connected before and used after,
must still get its secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from bridge.config import Settings
from tests.phone.test_phone_fuzz import JSON_VALUES, PATHOLOGICAL_TEXT, mutated, to_json
from tests.proxy.test_proxy_e2e_fuzz import PATIENCE_S, serving
from tests.wsrealtime.test_wsrealtime_fuzz import FULL
from tests.wsvoice.helpers import ws_url

EXAMPLES = max(10, hypothesis_settings().max_examples // 3)
MARKER = json.dumps({"type": "fuzz.marker"})
REPLIES = {"error", "realtime_session_response", "tts_response"}
FRAMES = st.lists(
    st.sampled_from(sorted(FULL)).flatmap(lambda kind: mutated(FULL[kind])).map(to_json)
    | JSON_VALUES.map(to_json)
    | PATHOLOGICAL_TEXT.filter(lambda t: len(t) < 60_000)
    | st.binary(max_size=64),
    min_size=1,
    max_size=4,  # with the marker: the request budget's burst
)


async def replies(ws: ClientConnection) -> list[dict[str, Any]]:
    """Replies (not ``status``) up to the marker's."""
    got: list[dict[str, Any]] = []
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
        if reply["type"] == "status":
            continue
        got.append(reply)
        if reply["type"] == "error" and "fuzz.marker" in reply["message"]:
            return got


async def fuzz_one(url: str, frames: list[str | bytes]) -> None:
    async with connect(ws_url(url, "/ws/realtime"), max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        await ws.send(MARKER)
        got = await replies(ws)
        assert len(got) == len(frames) + 1, got
        for reply in got:
            assert reply["type"] in REPLIES, reply
            assert reply["type"] != "error" or reply["message"]


async def good_client(url: str) -> ClientConnection:
    return await connect(ws_url(url, "/ws/realtime"))


async def good_secret(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "realtime_session_request", "expiresIn": 60}))
    reply = {"type": "status"}
    while reply["type"] == "status":
        reply = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
    assert reply["type"] == "realtime_session_response", reply


def test_fuzzed_wsrealtime_clients_leave_a_good_one_alone(caplog):
    caplog.set_level(logging.WARNING)
    with serving(Settings(), rest=True) as (lt, bridge):
        good = lt.run(good_client(bridge.base_url), PATIENCE_S)
        lt.run(good_secret(good), PATIENCE_S)

        @hypothesis_settings(max_examples=EXAMPLES)
        @given(frames=FRAMES)
        def fuzz(frames: list[str | bytes]) -> None:
            lt.run(fuzz_one(bridge.base_url, frames), PATIENCE_S)

        fuzz()
        lt.run(good_secret(good), PATIENCE_S)
        lt.run(good.close(), PATIENCE_S)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
