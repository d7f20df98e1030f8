"""Fuzzed ``/chat/v1`` clients beside a good one, over real loopback sockets.

The bridge and the local agent run on a loop in a background thread
(``tests.proxy.test_proxy_e2e_fuzz.serving``); Hypothesis runs in the test's thread. Each
example connects one more client (its own call) and sends it generated events (any name,
any payload, binary attachments, near-valid audio and text) with acknowledgements, so each
one's answer is known: a documented error code, or accepted. The bridge must log no
error, and the good client, connected before and used after, must still get its reply.
"""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bridge.config import Settings
from tests.chat.helpers import NS, ChatClient
from tests.chat.test_chat_fuzz import CODES, EVENTS
from tests.phone.test_phone_fuzz import WILD_TEXT, mutated
from tests.proxy.test_proxy_e2e_fuzz import PATIENCE_S, serving
from tests.proxy.test_proxy_fuzz import Undeliverable, delivered
from tests.softphone.test_softphone_fuzz import SIO_VALUES

EXAMPLES = max(10, hypothesis_settings().max_examples // 3)
AUDIO = {"data": "AQABAA==", "meta_info": {"sample_rate": 16000, "stream_sid": "MZ1"}}
EVENTS_ = st.tuples(
    st.sampled_from(EVENTS) | WILD_TEXT.filter(lambda n: n not in ("connect", "disconnect")),
    SIO_VALUES | mutated(AUDIO) | mutated({"data": "hi"}),
)
ANSWERS = CODES | {"overloaded", "ended"}


async def fuzz_one(url: str, events: list[tuple[str, Any]]) -> None:
    client = ChatClient()
    try:
        await client.connect(url)
        for name, raw in events:
            try:
                data = delivered(raw)
            except Undeliverable:
                continue  # nested deeper than python-socketio's decoder takes
            ack = await client.sio.call(name, data, namespace=NS, timeout=PATIENCE_S)
            if ack is not None and not ack.get("ok"):
                assert ack["error"]["code"] in ANSWERS, ack
    finally:
        await client.close()


async def good_client(url: str) -> ChatClient:
    client = ChatClient()
    await client.connect(url)
    await client.wait_for(lambda: client.of("status"), "connected")
    return client


async def good_reply(client: ChatClient) -> None:
    await client.emit("text", {"data": "Hello there"})
    await client.wait_for(lambda: client.audio, "the good client's reply")
    assert not client.of("error"), client.of("error")
    await client.close()


def test_fuzzed_chat_clients_leave_a_good_one_alone(caplog):
    caplog.set_level(logging.WARNING)
    with serving(Settings()) as (lt, bridge):
        good = lt.run(good_client(bridge.base_url), PATIENCE_S)

        @hypothesis_settings(max_examples=EXAMPLES)
        @given(events=st.lists(EVENTS_, min_size=1, max_size=4))
        def fuzz(events: list[tuple[str, Any]]) -> None:
            lt.run(fuzz_one(bridge.base_url, events), PATIENCE_S)

        fuzz()
        lt.run(good_reply(good), PATIENCE_S)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
