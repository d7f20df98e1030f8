"""The console in a real browser: Debian's headless Chromium, driven by Playwright, on a
real bridge with the admin API, records on a temporary SQLite file and a recording agent.

A simulated phone call with barge-ins is placed first; the console must list it in its
history, show its words and the barge-in on its timeline, draw its recording (pixels read
back from the canvas) and move the cursor as it plays. A second, long call must appear in
the live list, and the console's hang-up button must end it. A refused token is asked for
again; a server that is gone is said so on the page.

Set CONSOLE_SCREENSHOTS=dir to keep console-live.png and console-call.png there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from bridge.agents import Agent
from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.sim.caller import simulate_call
from tests.e2e import PATIENCE_S, fixture, rig, silence, until
from tests.test_e2e_call import barge_in_caller

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
browser = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (`make setup-test` installs it)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
PATIENCE_MS = 60_000
TOKEN = "console-test-token"
AGENT = Agent(record=True, barge_in_min_ms=400, greeting_guard_ms=0)

# Lit pixels in the caller's (top) and the agent's (bottom) half of the waveform canvas.
LIT_PIXELS = """() => {
  const canvas = document.getElementById('waveform');
  const { width, height } = canvas;
  const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  const lit = [0, 0];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      // Wave colours only: the grey middle line is not counted.
      if (data[i + 3] > 0 && (data[i + 1] > 140 || data[i + 2] > 200) && data[i] < 100) {
        lit[y < height / 2 ? 0 : 1]++;
      }
    }
  }
  return { lit, width, height };
}"""


@contextlib.asynccontextmanager
async def chromium_page(tmp_path: Path) -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh Chromium profile and a 1280x800 page, and the page's uncaught errors."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            context.set_default_timeout(PATIENCE_MS)
            page = context.pages[0] if context.pages else await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            await context.close()


def test_console_is_absent_without_admin_token() -> None:
    async def main() -> None:
        async with (
            running_bridge(Settings()) as bridge,
            httpx.AsyncClient(base_url=bridge.base_url) as client,
        ):
            for path in ("/console", "/console/", "/console/static/console.js"):
                assert (await client.get(path)).status_code == 404, path

    asyncio.run(main())


def test_console_page_and_files_are_served_from_the_package() -> None:
    async def main() -> None:
        async with (
            running_bridge(Settings(admin_token=TOKEN)) as bridge,
            httpx.AsyncClient(base_url=bridge.base_url) as client,
        ):
            page = await client.get("/console")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
            for name in ("console.css", "api.js", "waveform.js", "call.js", "console.js"):
                file = await client.get(f"/console/static/{name}")
                assert file.status_code == 200 and file.content, name
            for name in ("index.html", "..%2fpages.py", "nope.js"):
                assert (await client.get(f"/console/static/{name}")).status_code == 404
            # The API behind it still wants the token.
            assert (await client.get("/calls")).status_code == 401

    asyncio.run(main())


@browser
def test_console_shows_calls_recordings_and_hangs_up(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()

    async def main() -> None:
        settings = Settings(
            agents=(AGENT,),
            admin_token=TOKEN,
            records_path=str(tmp_path / "records.db"),
            recordings_dir=str(tmp_path / "recordings"),
        )
        async with (
            rig(settings) as r,
            chromium_page(tmp_path) as (page, errors),
            httpx.AsyncClient(
                base_url=r.bridge.base_url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=PATIENCE_S,
            ) as api,
        ):
            bridge = r.bridge
            result = await simulate_call(
                bridge.base_url,
                barge_in_caller(random.Random(3), 2),
                public_url=bridge.public_url,
                auth_token=bridge.auth_token,
                tail_s=0.5,
                from_="+15551234567",
            )
            writer = bridge.services.records
            assert writer is not None
            await until(lambda: writer.stats.written == 1, "the record written")
            call = (await api.get(f"/calls/{result.call_sid}")).json()
            assert call["has_recording"] and call["barge_ins"] >= 1

            # A wrong token is refused and asked for again; the right one opens the console.
            await page.goto(bridge.base_url + "/console#token=wrong")
            await page.wait_for_selector("#login:not([hidden]) .refused")
            await page.fill("#token", TOKEN)
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#view-live:not([hidden])")
            assert await page.is_visible("#live-empty")

            # History lists the call; its page shows its words and its barge-ins.
            await page.click("#nav-history")
            row = f"#history-rows tr[data-id='{result.call_sid}']"
            await page.wait_for_selector(row)
            assert "***4567" in await text_of(page, row)
            await page.click(row)
            await page.wait_for_selector("#timeline li[data-kind='barge_in']")
            timeline = await text_of(page, "#timeline")
            said = [e["text"] for e in call["timeline"] if e["kind"] in ("caller", "agent")]
            assert said and all(text in timeline for text in said if text)
            assert "caller speech" in timeline and "echo of caller speech" in timeline
            assert await page.locator("#timeline li.truncated .note.cut").count() >= 1
            assert await page.locator("#timeline .note.latency").count() >= 1

            # The waveform: both channels drawn.
            await page.wait_for_selector("#rec:not([hidden])")
            await page.wait_for_function("() => document.getElementById('rec-info').textContent")
            pixels = await page.evaluate(LIT_PIXELS)
            area = pixels["width"] * pixels["height"] / 2
            assert all(lit > area * 0.01 for lit in pixels["lit"]), pixels
            assert "stereo" in await text_of(page, "#rec-info")
            await page.screenshot(path=str(shots / "console-call.png"), full_page=True)

            # The cursor follows playback.
            assert float(await page.get_attribute("#cursor", "data-t") or "0") == 0
            await page.evaluate("() => document.getElementById('audio').play()")
            await page.wait_for_function(
                "() => +document.getElementById('cursor').dataset.t > 0.5"
                " && parseFloat(document.getElementById('cursor').style.left) > 0"
            )
            await page.evaluate("() => document.getElementById('audio').pause()")

            # A live call: listed within a poll, then ended from the console.
            long_call = asyncio.create_task(
                simulate_call(
                    bridge.base_url,
                    np.concatenate([silence(5.0), fixture("caller-hello.wav"), silence(60.0)]),
                    public_url=bridge.public_url,
                    auth_token=bridge.auth_token,
                    from_="+15559876543",
                )
            )
            try:
                await page.click("#nav-live")
                live_row = "#live-rows tr:has-text('***6543')"
                await page.wait_for_selector(live_row)
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('#live-rows td.duration')]"
                    ".some(td => td.textContent >= '0:02')"
                )
                assert await text_of(page, "#live-count") == "1"
                await page.screenshot(path=str(shots / "console-live.png"))
                hangup = f"{live_row} button"
                await page.click(hangup)
                assert await text_of(page, hangup) == "Confirm hang-up"
                await page.click(hangup)
                ended = await asyncio.wait_for(long_call, PATIENCE_S)
            finally:
                long_call.cancel()
            assert ended.closed_by == "bridge"
            await page.wait_for_selector("#live-empty:not([hidden])")
            assert errors == []

    asyncio.run(main())
    for name in ("console-call.png", "console-live.png"):
        assert (shots / name).stat().st_size > 10_000
        if keep := os.environ.get("CONSOLE_SCREENSHOTS"):
            shutil.copy(shots / name, Path(keep) / name)


@browser
def test_console_says_when_the_server_is_gone(tmp_path: Path) -> None:
    async def main() -> None:
        async with chromium_page(tmp_path) as (page, errors):
            async with running_bridge(Settings(admin_token=TOKEN)) as bridge:
                await page.goto(bridge.base_url + f"/console#token={TOKEN}")
                await page.wait_for_selector("#view-live:not([hidden])")
                assert "token" not in page.url  # taken from the address, then removed
                assert await page.is_visible("#live-empty")
            # The server is gone; the page, still polling, says so.
            await page.wait_for_selector("#alert:not([hidden])")
            assert "Cannot reach the server" in await text_of(page, "#alert")
            assert await text_of(page, "#updated") == "Not updated"
            assert errors == []

    asyncio.run(main())


async def text_of(page: Page, selector: str) -> str:
    return (await page.text_content(selector)) or ""
