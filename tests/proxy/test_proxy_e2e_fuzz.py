"""Fuzzed raw Realtime proxy clients beside a good one, over real loopback sockets.

The bridge (its Socket.IO server with the proxy) and the local agent run on one event
loop in a background thread (``tests.test_e2e_fuzz.LoopThread``). Hypothesis runs in the
test's thread: each example connects one more client and sends it a generated sequence of
``realtime-message`` payloads (events of any shape, binary attachments inside them, JSON
text nested past the decoder's limit, garbage text), then an event the proxy refuses, as a
marker that all before it were handled. The bridge must log no error; the good client's
session, opened before and used after, must still answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge
from bridge.local_agent import serve_local_agent
from tests.phone.test_phone_fuzz import PATHOLOGICAL_TEXT, mutated
from tests.proxy.helpers import RealtimeClient
from tests.proxy.test_proxy_fuzz import ANY_EVENT, FULL, Undeliverable, delivered
from tests.softphone.test_softphone_fuzz import SIO_VALUES
from tests.test_e2e_fuzz import LoopThread

EXAMPLES = max(10, hypothesis_settings().max_examples // 2)
MARKER = {"type": "fuzz.marker"}
PATIENCE_S = 30.0

MESSAGES = st.lists(
    ANY_EVENT
    | st.sampled_from(sorted(FULL)).flatmap(lambda kind: mutated(FULL[kind]))
    | SIO_VALUES
    | PATHOLOGICAL_TEXT,
    min_size=1,
    max_size=4,
)


@contextlib.contextmanager
def serving(
    settings: Settings, *, rest: bool = False
) -> Iterator[tuple[LoopThread, RunningBridge]]:
    """A bridge and the local agent on a loop in a background thread, until the block ends
    (``rest``: the agent's REST endpoints stand in for OpenAI's too)."""
    with LoopThread() as lt:
        ready: concurrent.futures.Future[tuple[RunningBridge, asyncio.Event]] = (
            concurrent.futures.Future()
        )

        async def serve() -> None:
            agent = await serve_local_agent(seed=11)
            served = settings.with_(openai_base_url=agent.api_url) if rest else settings
            try:
                async with running_bridge(served, model_url=agent.url) as bridge:
                    done = asyncio.Event()
                    ready.set_result((bridge, done))
                    await done.wait()
            finally:
                await agent.close()

        server = lt.submit(serve())
        bridge, done = ready.result(PATIENCE_S)
        try:
            yield lt, bridge
        finally:
            lt.loop.call_soon_threadsafe(done.set)
            server.result(PATIENCE_S)


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LoopThread, RunningBridge]]:
    with serving(Settings(realtime_proxy_messages_per_s=10_000)) as served:
        yield served


async def fuzz_one(url: str, messages: list[Any]) -> None:
    client = RealtimeClient()
    try:
        await client.connect(url)
        for message in messages:
            try:
                payload = delivered(message)
            except Undeliverable:
                payload = str(getattr(message, "text", message))  # as text: the proxy decodes it
            await client.sio.emit("realtime-message", payload)
        await client.send(MARKER)
        await client.wait_for(
            lambda: any(e.get("event_type") == MARKER["type"] for e in client.errors), "the marker"
        )
        for error in client.errors:
            assert error["code"] and error["message"]
    finally:
        await client.close()


async def good_client(url: str) -> RealtimeClient:
    client = RealtimeClient()
    await client.connect(url)
    await client.send({"type": "session.update", "session": {"voice": "ash"}})
    await client.wait_for(lambda: client.of("session.updated"), "session.updated")
    return client


async def good_reply(client: RealtimeClient) -> None:
    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Hello there"}],
    }
    await client.send({"type": "conversation.item.create", "item": item})
    await client.send({"type": "response.create"})
    await client.wait_for(
        lambda: any(e["response"]["status"] == "completed" for e in client.of("response.done")),
        "the good client's reply",
    )
    assert not client.errors, client.errors
    await client.close()


def test_fuzzed_clients_leave_a_good_session_alone(live, caplog):
    lt, bridge = live
    caplog.set_level(logging.WARNING)
    good = lt.run(good_client(bridge.base_url), PATIENCE_S)

    @hypothesis_settings(max_examples=EXAMPLES)
    @given(messages=MESSAGES)
    def fuzz(messages: list[Any]) -> None:
        lt.run(fuzz_one(bridge.base_url, messages), PATIENCE_S)

    fuzz()
    lt.run(good_reply(good), PATIENCE_S)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
