"""end_call on the softphone leg: typed text triggers it, the goodbye plays out, then the
session is hung up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.config import Settings
from bridge.harness import running_bridge
from tests.softphone.helpers import PATIENCE_S, FakeBrowser
from tests.tools.helpers import agent_from


def test_end_call_hangs_up_the_softphone_after_the_goodbye(tmp_path: Path) -> None:
    agent = agent_from(
        tmp_path,
        "greeting = ''\nend_call = true\nlocal_tool_triggers = { utterance = 'end_call' }\n",
        "http://127.0.0.1:9",
    )

    async def main() -> None:
        async with running_bridge(Settings(agents=(agent,), default_agent="test")) as bridge:
            browser = FakeBrowser(24000)
            await browser.connect(bridge.base_url)
            assert await browser.call("text", {"data": "That is all, thanks."}) == {"ok": True}
            await asyncio.wait_for(browser.ended.wait(), PATIENCE_S)
            [goodbye] = browser.item_ids()
            assert goodbye is not None
            sent_ms = len(browser.audio[goodbye]) / 48  # PCM16 at 24 kHz
            assert sent_ms > 500
            assert browser.far.played_ms(goodbye) >= sent_ms - 20  # heard to the end
            await browser.close()

    asyncio.run(main())
