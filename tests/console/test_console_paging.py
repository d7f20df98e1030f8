"""The console's call history in headless Chromium, over more calls than one page: the
Older/Newer buttons walk the pages (rows checked on each) and the page count follows, a
second click while a page loads is not taken; and a call's page shows its keypad presses
and model reconnect on its timeline.

Records are written straight into the SQLite file the bridge then serves them from.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.store.db import open_store
from bridge.store.records import CallRecord, DtmfPress, ModelReconnect, Turn
from tests.console.test_console_browser import TOKEN, browser, chromium_page, text_of

PAGE_SIZE = 50  # the console's (bridge/console/static/console.js)
CALLS = 2 * PAGE_SIZE + 17  # three pages: 50, 50, 17
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
KEYPAD_CALL = 3


def call_id(i: int) -> str:
    return f"CA{i:032d}"


def stored(i: int) -> CallRecord:
    start = T0 + timedelta(minutes=i)
    extra: dict[str, object] = {}
    if i == KEYPAD_CALL:
        extra = {
            "dtmf": "7#",
            "dtmf_presses": (
                DtmfPress(start + timedelta(seconds=4), "7"),
                DtmfPress(start + timedelta(seconds=6), "#"),
            ),
            "reconnects": 1,
            "model_sessions": (
                ModelReconnect(
                    start + timedelta(seconds=10),
                    "session expired",
                    start + timedelta(seconds=10.25),
                    2,
                    3,
                    180,
                ),
            ),
        }
    return CallRecord(
        id=call_id(i),
        leg="phone",
        direction="inbound",
        agent="support",
        from_=f"***{i:04d}",
        to="***5678",
        started_at=start,
        answered_at=start + timedelta(seconds=1),
        ended_at=start + timedelta(seconds=20),
        end_reason="caller hung up",
        turns=(Turn("user", f"call number {i}", start + timedelta(seconds=2)),),
        **extra,  # type: ignore[arg-type]
    )


def expected_page(page: int) -> list[str]:
    """The ids on page ``page`` (0 first): newest first."""
    newest_first = [call_id(i) for i in reversed(range(CALLS))]
    return newest_first[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]


ROW_IDS = "() => [...document.querySelectorAll('#history-rows tr')].map(r => r.dataset.id)"


@browser
def test_history_pages_forward_and_back(tmp_path: Path) -> None:
    records = str(tmp_path / "records.db")

    async def main() -> None:
        async with await open_store(records) as store:
            for i in range(CALLS):
                await store.save(stored(i))
        settings = Settings(admin_token=TOKEN, records_path=records)
        async with (
            running_bridge(settings) as bridge,
            chromium_page(tmp_path) as (page, errors),
        ):

            async def shows(n: int) -> None:
                ids = expected_page(n)
                await page.wait_for_function(
                    f"""() => {{
                      const ids = ({ROW_IDS})();
                      return ids.length === {len(ids)} && ids[0] === '{ids[0]}'
                        && ids[ids.length - 1] === '{ids[-1]}';
                    }}"""
                )
                assert await page.evaluate(ROW_IDS) == ids
                assert await text_of(page, "#page-no") == f"Page {n + 1}"
                assert await page.is_disabled("#newer") == (n == 0)
                assert await page.is_disabled("#older") == (n == 2)
                first = f"#history-rows tr[data-id='{ids[0]}']"
                assert f"***{int(ids[0][2:]):04d}" in await text_of(page, first)

            await page.goto(bridge.base_url + f"/console#token={TOKEN}")
            await page.wait_for_selector("#view-live:not([hidden])")
            await page.click("#nav-history")
            await shows(0)
            await page.click("#older")
            await shows(1)
            await page.click("#older")
            await shows(2)
            await page.click("#newer")
            await shows(1)
            await page.click("#newer")
            await shows(0)

            # Two clicks on Older before the first page has come: the second is not taken
            # (it would page on from the cursor the first is still fetching).
            await page.evaluate(
                "() => { const older = document.getElementById('older');"
                " older.click(); older.click(); }"
            )
            await shows(1)

            # On to the call with keys and a reconnect, and open it.
            await page.click("#older")
            await shows(2)
            await page.click(f"#history-rows tr[data-id='{call_id(KEYPAD_CALL)}']")
            await page.wait_for_selector("#timeline li[data-kind='reconnect']")
            keys = page.locator("#timeline li[data-kind='dtmf']")
            assert await keys.count() == 2
            assert "digit: 7" in (await keys.nth(0).text_content() or "")
            assert "digit: #" in (await keys.nth(1).text_content() or "")
            reconnect = await text_of(page, "#timeline li[data-kind='reconnect']")
            for note in ("Reconnect", "session expired", "session: 2", "replayed items: 3"):
                assert note in reconnect, reconnect
            facts = await text_of(page, "#facts")
            assert "Keypad7#" in facts.replace(" ", "") and "Reconnects1" in facts.replace(" ", "")
            assert errors == []

    asyncio.run(main())
