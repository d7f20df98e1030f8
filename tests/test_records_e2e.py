"""Call records from a whole simulated call: stored on SQLite and PostgreSQL with both
sides' transcripts, the barge-ins and the cut agent turn; a database that is down costs the
record (counted in ``/metrics``), never the call."""

from __future__ import annotations

import random
import socket
from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bridge.agents import Agent
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.sim.caller import simulate_call
from bridge.store.db import open_store
from tests.e2e import PATIENCE_S, fixture, match_through_gaps, rig, run_undisturbed, until
from tests.store.conftest import db_url, postgres  # noqa: F401  (fixtures)
from tests.test_e2e_call import barge_in_caller

AGENT = Agent(barge_in_min_ms=400, greeting_guard_ms=0)


def test_a_call_with_barge_ins_is_recorded(db_url: str) -> None:  # noqa: F811
    async def main() -> None:
        seen: list[CallEvent] = []

        def observe(call: Call, events: list[CallEvent]) -> None:
            seen.extend(events)

        settings = Settings(agents=(AGENT,))
        if "://" in db_url:
            settings = settings.with_(database_url=db_url)
        else:
            settings = settings.with_(records_path=db_url)
        async with rig(settings) as r:
            r.bridge.services.observers.append(observe)
            result = await simulate_call(
                r.bridge.base_url,
                barge_in_caller(random.Random(3), 2),
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=0.5,
                from_="+15551234567",
                to="+15557654321",
            )
            writer = r.bridge.services.records
            assert writer is not None
            await until(lambda: writer.stats.written == 1, "the record written")
        assert result.violations == [] and result.closed_by == "caller"

        store = await open_store(db_url)
        try:
            record = await store.get(result.call_sid)
        finally:
            await store.close()
        assert record is not None
        assert (record.leg, record.direction, record.agent) == ("phone", "inbound", "default")
        assert (record.from_, record.to) == ("***4567", "***4321")
        assert record.answered_at is not None and record.ended_at is not None
        assert record.end_reason == "caller hung up"
        assert record.reconnects == 0

        roles = Counter(turn.role for turn in record.turns)
        assert roles["user"] >= 2 and roles["assistant"] >= 2, record.turns
        assert all(turn.text for turn in record.turns if turn.role == "user")
        assert any(turn.text for turn in record.turns if turn.role == "assistant")
        # Every barge-in is on the record, with its trigger.
        triggers = [e.detail["trigger"] for e in seen if e.kind == "barge_in"]
        assert triggers and [b.trigger for b in record.barge_ins] == triggers
        # The agent turn a barge-in cut off is marked, with what the caller heard of it.
        cut = [turn for turn in record.turns if turn.truncated]
        assert cut, record.turns
        assert all(turn.role == "assistant" and turn.heard_ms is not None for turn in cut)
        heard = {b.audio_end_ms for b in record.barge_ins}
        assert {turn.heard_ms for turn in cut} <= heard
        assert record.usage.total_tokens >= 0

    run_undisturbed(main())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_database_that_is_down_costs_the_record_not_the_call() -> None:
    async def main() -> None:
        url = f"postgresql://bridge:secret@127.0.0.1:{closed_port()}/calls"
        caller = fixture("caller-hello.wav")
        async with (
            rig(Settings(agents=(AGENT,), database_url=url)) as r,
            httpx.AsyncClient(timeout=PATIENCE_S) as client,
        ):
            result = await simulate_call(
                r.bridge.base_url,
                caller,
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=1.0,
            )
            writer = r.bridge.services.records
            assert writer is not None
            await until(lambda: writer.stats.failed + writer.stats.dropped == 1, "a lost record")
            text = (await client.get(r.bridge.base_url + "/metrics")).text
        # The call went as ever: the caller heard its words echoed.
        assert result.violations == [] and result.closed_by == "caller"
        score, _ = match_through_gaps(caller[int(4.6 * 8000) : int(8.8 * 8000)], result.heard)
        assert score > 0.9
        lost = {
            s.labels["reason"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "bridge_records_lost_total"
        }
        assert lost == {"dropped": 0, "failed": 1}
        assert "secret" not in text

    run_undisturbed(main())
