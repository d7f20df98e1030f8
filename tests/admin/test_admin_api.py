"""The admin API over a real server: absent without ADMIN_TOKEN, 401 without the right
token, past calls paged and filtered on SQLite and PostgreSQL, a live simulated call
listed, read, hung up (after a line) and its recording downloaded with a Range."""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bridge.agents import Agent
from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge
from bridge.sim.caller import simulate_call
from bridge.store.db import open_store
from bridge.store.recording import wait_for_writes
from bridge.store.records import CallRecord, ResponseLatency, Turn
from tests.e2e import PATIENCE_S, fixture, rig, run_undisturbed, silence, until
from tests.store.conftest import db_url, postgres  # noqa: F401  (fixtures)

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stored(i: int, *, agent: str, leg: str) -> CallRecord:
    start = T0 + timedelta(minutes=i)
    return CallRecord(
        id=f"CA{i:032d}",
        leg=leg,
        direction="inbound",
        agent=agent,
        from_="***1234",
        to="***5678",
        started_at=start,
        answered_at=start + timedelta(seconds=1),
        ended_at=start + timedelta(seconds=30),
        end_reason="caller hung up",
        turns=(
            Turn("user", "hi", start),
            Turn("assistant", "hello", start + timedelta(seconds=2)),
        ),
        latencies=(
            ResponseLatency(start + timedelta(seconds=2.1), 700.0),
            ResponseLatency(start + timedelta(seconds=20), 900.0),
        ),
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[RunningBridge, httpx.AsyncClient]]:
    async with (
        running_bridge(settings) as bridge,
        httpx.AsyncClient(base_url=bridge.base_url, timeout=PATIENCE_S) as client,
    ):
        yield bridge, client


def test_without_a_token_the_routes_are_absent_and_with_one_they_are_guarded() -> None:
    async def main() -> None:
        async with serving(Settings()) as (_, client):
            assert (await client.get("/calls", headers=AUTH)).status_code == 404
            assert (await client.post("/calls/x/hangup", headers=AUTH)).status_code == 404
        async with serving(Settings(admin_token=TOKEN)) as (_, client):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = await client.get("/calls", headers=headers)
                assert response.status_code == 401, headers
                assert response.headers["www-authenticate"] == "Bearer"
            assert (await client.get("/calls/x/recording")).status_code == 401
            ok = await client.get("/calls", headers=AUTH)
            assert ok.status_code == 200 and ok.json() == {"calls": [], "next": None}
            assert (await client.get("/calls/nope", headers=AUTH)).status_code == 404
            assert (await client.post("/calls/nope/hangup", headers=AUTH)).status_code == 404
            assert (await client.get("/calls?state=odd", headers=AUTH)).status_code == 400
            assert (await client.get("/calls?before=zz", headers=AUTH)).status_code == 400

    asyncio.run(main())


def test_past_calls_are_paged_newest_first_and_filtered(db_url: str) -> None:  # noqa: F811
    records = [
        stored(
            i, agent="sales" if i % 3 == 0 else "support", leg="softphone" if i == 4 else "phone"
        )
        for i in range(7)
    ]

    async def main() -> None:
        store = await open_store(db_url)
        try:
            for record in records:
                await store.save(record)
        finally:
            await store.close()
        settings = Settings(admin_token=TOKEN)
        if "://" in db_url:
            settings = settings.with_(database_url=db_url)
        else:
            settings = settings.with_(records_path=db_url)
        async with serving(settings) as (_, client):

            async def pages(query: str) -> list[list[str]]:
                out, cursor = [], None
                while True:
                    url = f"/calls?{query}" + (f"&before={cursor}" if cursor else "")
                    body = (await client.get(url, headers=AUTH)).json()
                    out.append([c["id"] for c in body["calls"]])
                    cursor = body["next"]
                    if cursor is None:
                        return out

            newest_first = [r.id for r in reversed(records)]
            assert await pages("limit=3") == [newest_first[:3], newest_first[3:6], newest_first[6:]]
            assert await pages("limit=3&state=ended") == await pages("limit=3")
            assert await pages("state=live") == [[]]
            sales = [r.id for r in reversed(records) if r.agent == "sales"]
            assert await pages("agent=sales&limit=2") == [sales[:2], sales[2:]]
            assert await pages("leg=softphone") == [[records[4].id]]

            summary = (await client.get("/calls?limit=1", headers=AUTH)).json()["calls"][0]
            assert summary == {
                "id": records[6].id,
                "leg": "phone",
                "direction": "inbound",
                "agent": "sales",
                "from": "***1234",
                "to": "***5678",
                "state": "ended",
                "started_at": records[6].started_at.isoformat(),
                "answered_at": records[6].answered_at.isoformat(),  # type: ignore[union-attr]
                "ended_at": records[6].ended_at.isoformat(),  # type: ignore[union-attr]
                "duration_s": 30.0,
                "end_reason": "caller hung up",
                "turns": 2,
                "barge_ins": 0,
                "latency_ms": 800.0,  # the median
                "has_recording": False,
                "reconnects": 0,
                "tool_calls": 0,
            }
            one = (await client.get(f"/calls/{records[2].id}", headers=AUTH)).json()
            assert [(e["t"], e["kind"], e["text"], e["latency_ms"]) for e in one["timeline"]] == [
                (0.0, "caller", "hi", None),
                (2.0, "agent", "hello", 700.0),  # the answer heard nearest its first words
            ]
            assert one["usage"] == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
            hangup = await client.post(f"/calls/{records[2].id}/hangup", headers=AUTH)
            assert hangup.status_code == 409

    run_undisturbed(main())


def test_a_live_call_is_listed_hung_up_and_its_recording_served(tmp_path: Path) -> None:
    agent = Agent(greeting_guard_ms=0, record=True)
    settings = Settings(
        agents=(agent,),
        admin_token=TOKEN,
        records_path=str(tmp_path / "calls.db"),
        recordings_dir=str(tmp_path / "recordings"),
    )
    caller = np.concatenate([fixture("caller-hello.wav"), silence(40.0)])

    async def main() -> None:
        async with (
            rig(settings) as r,
            httpx.AsyncClient(base_url=r.bridge.base_url, timeout=PATIENCE_S) as client,
        ):
            call = asyncio.create_task(
                simulate_call(
                    r.bridge.base_url,
                    caller,
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                )
            )
            live: list[dict[str, Any]] = []

            async def listed() -> bool:
                live[:] = (await client.get("/calls?state=live", headers=AUTH)).json()["calls"]
                return bool(live)

            deadline = asyncio.get_running_loop().time() + PATIENCE_S
            while not await listed():
                assert asyncio.get_running_loop().time() < deadline, "no live call listed"
                await asyncio.sleep(0.05)
            (summary,) = live
            assert summary["state"] == "live" and summary["leg"] == "phone"
            assert summary["ended_at"] is None and summary["has_recording"] is True
            call_id = summary["id"]
            detail = (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
            assert detail["state"] == "live" and isinstance(detail["timeline"], list)

            ending = await client.post(
                f"/calls/{call_id}/hangup", headers=AUTH, json={"say": "Goodbye now."}
            )
            assert ending.status_code == 202
            assert ending.json() == {"id": call_id, "state": "ending"}
            result = await asyncio.wait_for(call, PATIENCE_S)
            assert result.closed_by == "bridge" and result.violations == []
            writer = r.bridge.services.records
            assert writer is not None
            await until(lambda: writer.stats.written == 1, "the record written")

            ended = (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
            assert ended["state"] == "ended" and ended["end_reason"] == "ended by an operator"
            assert ended["latency_ms"] is not None and ended["latency_ms"] > 0
            assert any(e["latency_ms"] for e in ended["timeline"] if e["kind"] == "agent")
            again = await client.post(f"/calls/{call_id}/hangup", headers=AUTH)
            assert again.status_code == 409

            await asyncio.to_thread(wait_for_writes)
            wav = await client.get(f"/calls/{call_id}/recording", headers=AUTH)
            assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
            with wave.open(BytesIO(wav.content)) as w:
                assert (w.getnchannels(), w.getframerate()) == (2, 8000)
                frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
            assert np.abs(frames[:, 0]).max() > 1000 and np.abs(frames[:, 1]).max() > 1000
            part = await client.get(
                f"/calls/{call_id}/recording", headers=AUTH | {"Range": "bytes=44-1043"}
            )
            assert part.status_code == 206 and part.content == wav.content[44:1044]

    run_undisturbed(main())
