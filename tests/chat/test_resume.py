"""Reconnection grace: a dropped connection comes back to the same call and model session.

``/chat/v1`` with python-socketio's own automatic reconnection (it resends the ``auth`` it
connected with, resume id included); ``/softphone`` with a page that connects again with
the id. Past ``SOCKETIO_RESUME_GRACE_S`` the call ends.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import numpy as np
import socketio

from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.local_agent import serve_local_agent
from tests.chat.helpers import NS as CHAT_NS
from tests.chat.helpers import PATIENCE_S, ChatClient, no_calls
from tests.softphone.helpers import NS as SOFTPHONE_NS
from tests.softphone.helpers import FakeBrowser, caller_speech


async def drop_transport(sio: object) -> None:
    """Cut the client's WebSocket as a network blip would: no Socket.IO goodbye."""
    ws = sio.eio.ws  # type: ignore[attr-defined]
    await ws.close()


def answer_the_resume(sio: socketio.AsyncClient, ns: str, event: str, data: Any) -> list[str]:
    """Make a client answer ``status {resumed: true}`` at once, from its handler, as an app
    may: what each answer gave ("sent", or the client's error)."""
    outcome: list[str] = []
    on_other = sio.handlers[ns]["*"]

    async def on_event(name: str, payload: Any = None) -> None:
        await on_other(name, payload)
        if name == "status" and isinstance(payload, dict) and payload.get("resumed"):
            try:
                await sio.emit(event, data, namespace=ns)
                outcome.append("sent")
            except socketio.exceptions.SocketIOError as exc:
                outcome.append(f"{type(exc).__name__}: {exc}")

    sio.handlers[ns]["*"] = on_event
    return outcome


def typed(bridge: Any) -> list[str]:
    """The texts the bridge's calls are given as typed input, as they come."""
    texts: list[str] = []

    def observe(call: Call, batch: list[CallEvent]) -> None:
        texts.extend(str(e.detail.get("text")) for e in batch if e.kind == "user_text")

    bridge.services.observers.append(observe)
    return texts


def test_chat_client_resumes_within_the_grace_period() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                resume = secrets.token_urlsafe(16)
                client = ChatClient(16000, reconnection=True)
                await client.connect(bridge.base_url, auth={"resume": resume})
                await client.wait_for(lambda: client.audio, "the welcome message")
                (runner,) = bridge.services.calls
                assert client.of("status")[0]["resume"] == resume
                greetings = len(client.item_ids())

                await drop_transport(client.sio)
                await client.wait_for(
                    lambda: any(s.get("resumed") for s in client.of("status")), "the resume"
                )
                assert bridge.services.calls == {runner}
                assert len(agent.sessions) == 1 and runner.call.sessions == 1

                # The same conversation goes on: the caller is heard and echoed.
                await client.send_audio(caller_speech(16000))
                await client.send_audio(np.zeros(16000, np.int16))
                await client.wait_for(lambda: len(client.item_ids()) > greetings, "the echo")
                # One model session throughout, and after the resume only the echo: no
                # second greeting.
                assert len(agent.sessions) == 1 and runner.call.sessions == 1
                assert len(client.item_ids()) == greetings + 1
                await client.close()
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())


def test_past_the_grace_period_the_call_ends() -> None:
    async def main() -> None:
        async with running_bridge(Settings(socketio_resume_grace_s=0.5)) as bridge:
            client = ChatClient(16000)
            await client.connect(bridge.base_url, auth={"resume": secrets.token_urlsafe(16)})
            await client.wait_for(lambda: client.audio, "the welcome message")
            (runner,) = bridge.services.calls
            await drop_transport(client.sio)
            started = time.monotonic()
            await no_calls(bridge)
            assert time.monotonic() - started >= 0.5
            assert bridge.app.softphone.chat is not None
            assert len(bridge.app.softphone.chat.live) == 0
            assert runner.call.closed is not None and "not back within" in runner.call.closed
            await client.close()

    asyncio.run(main())


def test_softphone_page_resumes_with_its_id() -> None:
    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                resume = secrets.token_urlsafe(16)
                first = FakeBrowser(24000)
                await first.connect(bridge.base_url, auth={"resume": resume})
                await first.wait_for(lambda: first.audio, "the greeting")
                (runner,) = bridge.services.calls
                assert first.of("status")[0]["resume"] == resume
                await drop_transport(first.sio)
                await asyncio.wait_for(first.disconnected.wait(), PATIENCE_S)

                again = FakeBrowser(24000)
                await again.connect(bridge.base_url, auth={"resume": resume})
                await again.wait_for(lambda: "agent-ready" in again.status(), "agent-ready")
                assert again.of("status")[0]["resumed"] is True
                assert bridge.services.calls == {runner} and len(agent.sessions) == 1
                # The greeting was cut when the connection dropped; it is not said again.
                assert runner.call.barge_ins and runner.call.barge_ins[0].trigger == "client"
                assert again.audio == {}
                assert await again.call("hangup") == {"ok": True}
                await first.close()
                await again.close()
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())


def test_a_resumed_client_may_answer_its_status_at_once() -> None:
    """The status that says a session was resumed comes after the connection's CONNECT, on
    both namespaces: a client that answers it from its handler is connected by then (it
    used to come first, and a python-socketio client's answer failed: not connected)."""

    async def main() -> None:
        agent = await serve_local_agent(seed=1)
        try:
            async with running_bridge(Settings(), model_url=agent.url) as bridge:
                texts = typed(bridge)
                chat = ChatClient(16000, reconnection=True)
                sent = answer_the_resume(chat.sio, CHAT_NS, "text", {"data": "still there?"})
                await chat.connect(bridge.base_url, auth={"resume": secrets.token_urlsafe(16)})
                await chat.wait_for(lambda: chat.audio, "the welcome message")
                await drop_transport(chat.sio)
                await chat.wait_for(lambda: sent, "the answer to the resume")
                assert sent == ["sent"]
                await chat.wait_for(lambda: texts, "the typed text at the bridge")
                assert texts == ["still there?"]

                resume = secrets.token_urlsafe(16)
                first = FakeBrowser(24000)
                await first.connect(bridge.base_url, auth={"resume": resume})
                await first.wait_for(lambda: first.audio, "the greeting")
                await drop_transport(first.sio)
                await asyncio.wait_for(first.disconnected.wait(), PATIENCE_S)
                again = FakeBrowser(24000)
                answered = answer_the_resume(again.sio, SOFTPHONE_NS, "text", {"data": "hi"})
                await again.connect(bridge.base_url, auth={"resume": resume})
                await again.wait_for(lambda: answered, "the answer to the resume")
                assert answered == ["sent"]
                await again.wait_for(lambda: len(texts) == 2, "the page's typed text")
                assert texts[1] == "hi"
                for client in (chat, first, again):
                    await client.close()
                await no_calls(bridge)
        finally:
            await agent.close()

    asyncio.run(main())
