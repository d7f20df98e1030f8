"""The companion HTTP API, the per-user cap, admission (token, origin) and bad input."""

import asyncio
import base64
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from bridge.config import Settings
from bridge.store.db import open_store
from tests.companion.helpers import CompanionClient, ws_url
from tests.companion.test_companion_calls import rigged
from tests.e2e import until

ADMIN = "admin-secret"


def test_http_routes_and_the_per_user_cap():
    async def main():
        async with rigged(Settings(admin_token=ADMIN)) as (bridge, agent):
            clients = [await CompanionClient.open(bridge.base_url) for _ in range(4)]
            for c in clients[:3]:
                await c.start("same-user", "conv")
            fourth = clients[3]
            await fourth.start("same-user", "conv", ready=False)
            await fourth.wait_for(fourth.errors, "the refusal")
            assert "too many sessions" in fourth.errors()[0]
            assert not fourth.of("session_ready") and len(agent.sessions) == 3
            other = await CompanionClient.open(bridge.base_url)
            await other.start("another-user", "conv")  # the cap is per user

            async with httpx.AsyncClient(base_url=bridge.base_url) as http:
                health = (await http.get("/health")).json()
                assert health == {"status": "ok", "connections": 5, "sessions": 4}
                status = (await http.get("/ws/status")).json()
                assert status["sessions"] == {"companion": 4} and status["total"] == 4
                assert status["connections"] == {"companion": 5}
                for path in ("/api/realtime/sessions", "/api/realtime/metrics"):
                    assert (await http.get(path)).status_code == 401
                    wrong = {"Authorization": "Bearer nope"}
                    assert (await http.get(path, headers=wrong)).status_code == 401
                auth = {"Authorization": f"Bearer {ADMIN}"}
                listed = (await http.get("/api/realtime/sessions", headers=auth)).json()
                sessions = listed["sessions"]
                assert sorted(s["userId"] for s in sessions) == ["another-user"] + 3 * ["same-user"]
                one = sessions[0]
                assert set(one) >= {"userId", "conversationId", "startedAt", "lastActivityAt"}
                got = await http.get(f"/api/realtime/sessions/{one['clientId']}", headers=auth)
                assert got.status_code == 200 and got.json()["turns"] == 0
                assert got.json()["sessionId"] == one["sessionId"]
                missing = await http.get("/api/realtime/sessions/c_nope", headers=auth)
                assert missing.status_code == 404
                figures = (await http.get("/api/realtime/metrics", headers=auth)).json()
                assert figures["sessionsCreated"] == 4 and figures["activeSessions"] == 4
                assert figures["refused"] == 1 and figures["errorRate"] == 0.2

                await clients[0].close()
                await until(lambda: len(bridge.services.calls) == 3, "one session to end")
                figures = (await http.get("/api/realtime/metrics", headers=auth)).json()
                assert figures["sessionsEnded"] == 1 and figures["averageDurationSeconds"] > 0
            # A place freed: the refused client may start now.
            await fourth.send("start_realtime", {"voiceSettings": {"voice": "echo"}})
            await fourth.wait_for(lambda: fourth.of("session_ready"), "session_ready")
            for c in [*clients[1:], other]:
                await c.close()

    asyncio.run(main())


def test_token_and_origin_are_checked_before_any_session():
    async def main():
        async with rigged(Settings(softphone_token="tok-1")) as (bridge, agent):
            for suffix in ("", "?token=wrong"):
                async with connect(ws_url(bridge.base_url) + suffix) as ws:
                    first = json.loads(await ws.recv())
                    assert first["type"] == "error" and "unauthorized" in first["data"]["error"]
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            with pytest.raises(InvalidStatus) as refused:
                await connect(
                    ws_url(bridge.base_url) + "?token=tok-1", origin=Origin("https://evil.example")
                )
            assert refused.value.response.status_code == 403
            assert not agent.sessions

            by_query = await CompanionClient.open(bridge.base_url, path="/ws/companion?token=tok-1")
            await by_query.start()
            by_header = await CompanionClient.open(
                bridge.base_url,
                additional_headers={"Authorization": "Bearer tok-1"},
                origin=Origin(bridge.base_url),
            )
            await by_header.start("u2")
            await by_query.close()
            await by_header.close()

    asyncio.run(main())


def test_a_real_key_without_a_token_opens_nothing():
    async def main():
        settings = Settings(openai_api_key="sk-test")
        async with rigged(settings) as (bridge, agent):
            async with connect(ws_url(bridge.base_url)) as ws:
                first = json.loads(await ws.recv())
                assert "SOFTPHONE_TOKEN" in first["data"]["error"]
            assert not agent.sessions

    asyncio.run(main())


def test_bad_input_gets_an_error_and_other_sessions_never_notice():
    async def main():
        async with rigged(Settings(companion_messages_per_minute=30)) as (bridge, _):
            calm = await CompanionClient.open(bridge.base_url)
            await calm.start("calm")
            bad = await CompanionClient.open(bridge.base_url)
            expected = []
            for raw, why in [
                ("not json", "not valid JSON"),
                ('{"type": "hello", "data": {}}', "unknown message type"),
                ('{"type": "auth", "data": {"userId": ""}}', "userId"),
                ('{"type": "start_realtime", "data": {}}', "auth"),
                ('{"data": {}}', '"type"'),
            ]:
                await bad.ws.send(raw)
                expected.append(why)
            await bad.ws.send(b"\x00\x01")
            expected.append("binary")
            await bad.send("auth", {"userId": "bad", "conversationId": "c"})
            for data, why in [
                ({"personalityTraits": {"humor": 150}}, "from 0 to 100"),
                ({"voiceSettings": {"voice": "robot"}}, "unknown voice"),
                ({"voiceSettings": {"pitch": 1.3}}, "pitch is not supported"),
                ({"voiceSettings": {"volume": -1}}, "volume"),
            ]:
                await bad.send("start_realtime", data)
                expected.append(why)
            await bad.wait_for(lambda: len(bad.errors()) == len(expected), "every error")
            for error, why in zip(bad.errors(), expected, strict=True):
                assert why in error, (error, why)
            # Speed outside the model's range is clamped, with a warning.
            await bad.send("start_realtime", {"voiceSettings": {"voice": "fable", "speed": 3}})
            await bad.wait_for(lambda: bad.of("session_ready"), "session_ready")
            ready = bad.of("session_ready")[0]
            assert ready["voice"] == "ballad" and "1.5" in " ".join(ready["warnings"])
            count = len(bad.errors())
            await bad.send("audio", {"audio": base64.b64encode(b"\x00\x01\x02").decode()})
            await bad.send("audio", {"audio": "***"})
            await bad.send("text", {})
            await bad.wait_for(lambda: len(bad.errors()) == count + 3, "audio errors")
            assert "whole" in bad.errors()[-3] and "base64" in bad.errors()[-2]
            # A flood: told once, then cut off.
            for _ in range(80):
                await bad.send("text", {"text": "hi"})
            await bad.wait_for(bad.closed.is_set, "the flood to be cut")
            assert any("too many messages" in e for e in bad.errors())
            assert bad.ws.close_code == 1008

            assert not calm.errors() and not calm.closed.is_set()
            await calm.send("text", {"text": "still here"})
            await calm.wait_for(lambda: calm.of("response_complete"), "an answer")
            await calm.close()

    asyncio.run(main())


def test_a_returning_conversation_starts_with_its_earlier_turns(tmp_path):
    async def main():
        db = tmp_path / "records.db"
        async with rigged(Settings(records_path=str(db))) as (bridge, agent):
            first = await CompanionClient.open(bridge.base_url)
            await first.start("zed", "trip")
            await first.send("text", {"text": "my name is Zed"})
            await first.wait_for(lambda: first.of("response_complete"), "an answer")
            await first.close()
            store = await open_store(str(db))
            try:

                async def kept() -> bool:
                    calls = await store.list_calls(leg="companion", with_turns=True)
                    return bool(calls) and len(calls[0].turns) >= 2

                for _ in range(1500):
                    if await kept():
                        break
                    await asyncio.sleep(0.02)
                assert await kept(), "the first session's record"
            finally:
                await store.close()

            other = await CompanionClient.open(bridge.base_url)
            await other.start("zed", "another-trip")
            again = await CompanionClient.open(bridge.base_url)
            await again.start("zed", "trip")
            sessions = list(agent.sessions)
            fresh = sessions[1].received.get("conversation.item.create", [])
            assert fresh == []
            items = sessions[2].received["conversation.item.create"]
            texts = [c["text"] for i in items for c in i["item"]["content"]]
            assert texts[0] == "my name is Zed" and len(texts) >= 2
            assert items[1]["item"]["role"] == "assistant"
            await other.close()
            await again.close()

    asyncio.run(main())
