"""A simulated call with keypad presses and a model session forced to expire mid-call:
its record (SQLite, and PostgreSQL where the test set-up can start one) holds each
digit with its time and the reconnect (when, why, which session, how many items were
replayed), and ``GET /calls/{id}`` shows both, in its fields and its timeline."""

from __future__ import annotations

from datetime import timedelta

import httpx

from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.sim.caller import simulate_call
from bridge.store.db import open_store
from tests.e2e import PATIENCE_S, rig, run_undisturbed, silence, until
from tests.store.conftest import db_url, postgres  # noqa: F401  (fixtures)

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = [(0.6, "4"), (2.4, "#")]


def test_keypad_presses_and_a_model_reconnect_are_in_the_record_and_the_api(
    db_url: str,  # noqa: F811
) -> None:
    settings = Settings(admin_token=TOKEN)
    if "://" in db_url:
        settings = settings.with_(database_url=db_url)
    else:
        settings = settings.with_(records_path=db_url)

    async def main() -> None:
        async with (
            rig(settings) as r,
            httpx.AsyncClient(base_url=r.bridge.base_url, timeout=PATIENCE_S) as client,
        ):
            seen: list[CallEvent] = []
            expired: list[int] = []

            def observe(call: Call, events: list[CallEvent]) -> None:
                seen.extend(events)
                # The first key press takes the model session down: the agent expires it.
                if not expired and any(e.kind == "dtmf" for e in events):
                    expired.append(r.agent.expire_now())

            r.bridge.services.observers.append(observe)
            result = await simulate_call(
                r.bridge.base_url,
                silence(3.0),
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=0.5,
                dtmf=KEYS,
            )
            writer = r.bridge.services.records
            assert writer is not None
            await until(lambda: writer.stats.written == 1, "the record written")
            sessions = list(r.agent.sessions)
            body = (await client.get(f"/calls/{result.call_sid}", headers=AUTH)).json()

        assert result.closed_by == "caller" and expired == [1] and len(sessions) == 2
        lost = next(e for e in seen if e.kind == "model_lost")
        back = next(e for e in seen if e.kind == "model_reconnected")
        # The new session was given the conversation so far (the greeting at least),
        # ahead of anything the "#" that ends the keypad entry adds.
        replayed = back.detail["replayed"]
        assert 1 <= replayed <= len(sessions[1].received.get("conversation.item.create", []))

        store = await open_store(db_url)
        try:
            record = await store.get(result.call_sid)
        finally:
            await store.close()
        assert record is not None
        origin = record.started_at
        # Each digit, in order, at the time the Call heard it.
        key_events = [e for e in seen if e.kind == "dtmf"]
        assert record.dtmf == "4#"
        assert [p.digit for p in record.dtmf_presses] == ["4", "#"]
        for press, event in zip(record.dtmf_presses, key_events, strict=True):
            assert press.at == origin + timedelta(seconds=event.t)
        # The reconnect: lost, why, replaced by session 2 with the conversation replayed.
        assert record.reconnects == 1
        (reconnect,) = record.model_sessions
        assert reconnect.lost_at == origin + timedelta(seconds=lost.t)
        assert reconnect.at == origin + timedelta(seconds=back.t)
        assert reconnect.reason == lost.detail["reason"] and reconnect.reason
        assert (reconnect.session, reconnect.replayed) == (2, replayed)

        # The admin API answers with both.
        assert body["dtmf"] == "4#" and body["reconnects"] == 1
        (session,) = body["model_sessions"]
        assert session["session"] == 2 and session["replayed_items"] == replayed
        assert session["reason"] == reconnect.reason
        assert session["reconnected_at"] == reconnect.at.isoformat()
        timeline = body["timeline"]
        keys = [e for e in timeline if e["kind"] == "dtmf"]
        assert [e["detail"]["digit"] for e in keys] == ["4", "#"]
        assert [e["t"] for e in keys] == [round(e.t, 3) for e in key_events]
        (entry,) = [e for e in timeline if e["kind"] == "reconnect"]
        assert entry["t"] == round(lost.t, 3)
        assert entry["detail"]["session"] == 2
        assert entry["detail"]["replayed_items"] == replayed
        assert entry["detail"]["reason"] == reconnect.reason
        assert [e["t"] for e in timeline] == sorted(e["t"] for e in timeline)

    run_undisturbed(main())
