"""The local agent's fault switches, over real sockets: refuse, expire, drop, stall."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.local_agent import Faults, LocalAgentServer, serve_local_agent

PATIENCE_S = 30.0
HEADERS = {"Authorization": "Bearer local"}


def url(agent: LocalAgentServer) -> str:
    return agent.url + "?model=gpt-realtime"


async def events_until_closed(ws: ClientConnection) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    async with asyncio.timeout(PATIENCE_S):
        try:
            async for message in ws:
                out.append(json.loads(message))
        except ConnectionClosed:
            pass
    return out


@pytest.mark.parametrize("status", [429, 503, 401])
def test_refuses_the_first_handshakes_with_the_chosen_status(status: int):
    async def main() -> None:
        faults = Faults(refuse_status=status, refuse_first=2)
        async with await serve_local_agent(faults=faults) as agent:
            for _ in range(2):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(url(agent), additional_headers=HEADERS)
                assert refused.value.response.status_code == status
            async with connect(url(agent), additional_headers=HEADERS) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
            assert agent.refused == [status, status]
            assert len(agent.sessions) == 1

    asyncio.run(main())


def test_expires_the_first_sessions_after_n_seconds():
    async def main() -> None:
        faults = Faults(expire_after_s=0.3, sessions=1)
        async with await serve_local_agent(faults=faults) as agent:
            async with connect(url(agent), additional_headers=HEADERS) as ws:
                events = await events_until_closed(ws)
                assert ws.close_code == 1001
            assert events[-1]["type"] == "error"
            assert events[-1]["error"]["code"] == "session_expired"  # type: ignore[index]
            async with connect(url(agent), additional_headers=HEADERS):
                pass
            first, second = agent.sessions
            assert first.max_duration_s == 0.3 and second.max_duration_s == 1800.0

    asyncio.run(main())


def test_expire_now_ends_every_open_session():
    async def main() -> None:
        async with (
            await serve_local_agent() as agent,
            connect(url(agent), additional_headers=HEADERS) as ws,
        ):
            assert json.loads(await ws.recv())["type"] == "session.created"
            assert agent.expire_now() == 1
            events = await events_until_closed(ws)
            assert ws.close_code == 1001
            assert events[-1]["error"]["code"] == "session_expired"  # type: ignore[index]

    asyncio.run(main())


@pytest.mark.parametrize("code", [1006, 1011])
def test_drops_the_session_abruptly(code: int):
    async def main() -> None:
        faults = Faults(drop_after_s=0.2, drop_code=code)
        async with (
            await serve_local_agent(faults=faults) as agent,
            connect(url(agent), additional_headers=HEADERS) as ws,
        ):
            events = await events_until_closed(ws)
            assert ws.close_code == code
            # No error event, no close reason from the service: it just went away.
            assert [e["type"] for e in events] == ["session.created"]

    asyncio.run(main())


def test_a_stalled_session_keeps_its_socket_but_answers_nothing():
    async def main() -> None:
        faults = Faults(stall_after_s=0.2)
        async with await serve_local_agent(faults=faults) as agent:
            async with connect(
                url(agent), additional_headers=HEADERS, ping_interval=None, close_timeout=0.5
            ) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
                # Once stalled: a response is asked for and a ping sent; neither is answered.
                async with asyncio.timeout(PATIENCE_S):
                    while not agent.stalled:
                        await asyncio.sleep(0.01)
                await ws.send(json.dumps({"type": "response.create"}))
                pong = await ws.ping()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(pong)
                assert ws.close_code is None  # still open
            (session,) = agent.sessions
            assert "response.create" not in session.received

    asyncio.run(main())


def test_faults_reject_an_unknown_drop_code():
    with pytest.raises(ValueError):
        Faults(drop_code=1000)
