"""Fuzzed companion clients beside a good one, over real loopback sockets.

The bridge and the local agent run on a loop in a background thread
(``tests.proxy.test_proxy_e2e_fuzz.serving``); Hypothesis runs in the test's thread. Each
example connects one more client and sends it generated frames (JSON of any shape,
near-valid messages, garbage text, binary; a valid ``auth`` + ``start_realtime`` among them
starts a session), then a message of an unknown type as a marker. The bridge must log no
error and keep the connection; the good client, started before and used after, must still
get its reply.
"""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bridge.config import Settings
from tests.companion.helpers import CompanionClient
from tests.companion.test_companion_fuzz import TYPES, full_messages
from tests.phone.test_phone_fuzz import JSON_VALUES, PATHOLOGICAL_TEXT, mutated, to_json
from tests.proxy.test_proxy_e2e_fuzz import PATIENCE_S, serving

EXAMPLES = max(10, hypothesis_settings().max_examples // 3)
MARKER = to_json({"type": "fuzz.marker", "data": {}})
FRAMES = st.lists(
    st.sampled_from(TYPES).flatmap(lambda kind: mutated(full_messages()[kind])).map(to_json)
    | st.sampled_from(TYPES).map(lambda kind: to_json(full_messages()[kind]))
    | JSON_VALUES.map(to_json)
    | PATHOLOGICAL_TEXT.filter(lambda t: len(t) < 60_000)
    | st.binary(max_size=64),
    min_size=1,
    max_size=4,
)


async def fuzz_one(url: str, frames: list[str | bytes]) -> None:
    client = await CompanionClient.open(url, max_size=None)
    try:
        for frame in frames:
            await client.ws.send(frame)
        await client.ws.send(MARKER)
        await client.wait_for(
            lambda: any("fuzz.marker" in e for e in client.errors()) or client.closed.is_set(),
            "the marker's error",
        )
        assert not client.closed.is_set(), client.kinds()
    finally:
        await client.close()


async def good_client(url: str) -> CompanionClient:
    client = await CompanionClient.open(url)
    await client.start("good-user", "good-conversation")
    return client


async def good_reply(client: CompanionClient) -> None:
    await client.send("text", {"text": "Hello there"})
    await client.wait_for(lambda: client.audio, "the good client's reply")
    assert not client.errors(), client.errors()
    await client.close()


def test_fuzzed_companion_clients_leave_a_good_one_alone(caplog):
    caplog.set_level(logging.WARNING)
    with serving(Settings()) as (lt, bridge):
        good = lt.run(good_client(bridge.base_url), PATIENCE_S)

        @hypothesis_settings(max_examples=EXAMPLES)
        @given(frames=FRAMES)
        def fuzz(frames: list[Any]) -> None:
            lt.run(fuzz_one(bridge.base_url, frames), PATIENCE_S)

        fuzz()
        lt.run(good_reply(good), PATIENCE_S)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
