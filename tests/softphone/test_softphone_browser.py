"""The softphone page in a real browser: Debian's headless Chromium, driven by Playwright.

Chromium's fake microphone plays a WAV made from fixtures/caller-hello.wav (4.5 s of
silence, a 4.5 s utterance, 6 s of silence, looped) after ``LEAD_IN_S`` more of silence,
so that the greeting has played out before the caller speaks even when a loaded host
takes seconds to set the call up. The local agent greets, then echoes
the utterance; the page must play both (its playback worklet echoes marks as it goes,
which is what the bridge counts as heard) and show the transcript and state.

Set SOFTPHONE_SCREENSHOT=path.png to keep the screenshot of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from bridge.audio.resample import resample_offline
from bridge.audio.wav import read_wav, write_wav
from bridge.config import Settings
from bridge.harness import running_bridge
from tests.softphone.helpers import PATIENCE_S, ROOT

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (`make setup-test` installs it)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
]
GREETING_MS = 4300  # bridge/local_agent/greeting-24k.wav
# Chromium on a loaded host is slow to do anything: every wait is generous (they only ever
# end a test that is failing anyway); what is judged is what the page did, not how soon.
PATIENCE_MS = 60_000
# The microphone capture starts at the click on Call; setting the call up and the greeting
# (4.3 s) must be done before the caller talks, however slow the host.
LEAD_IN_S = 6.0


def fake_mic_wav(tmp_path: Path) -> Path:
    """fixtures/caller-hello.wav after ``LEAD_IN_S`` of silence, at 48 kHz (Chromium's
    capture rate), mono 16-bit."""
    pcm, rate = read_wav(ROOT / "fixtures" / "caller-hello.wav")
    pcm = np.concatenate([np.zeros(int(LEAD_IN_S * rate), pcm.dtype), pcm])
    out = tmp_path / "mic-48k.wav"
    write_wav(out, np.asarray(resample_offline(pcm, rate, 48000), np.int16), 48000)
    return out


@contextlib.asynccontextmanager
async def chromium_page(
    tmp_path: Path, *, mic: Path | None
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh Chromium profile and page, and the page's uncaught errors as they happen;
    ``mic=None``: the microphone prompt is refused."""
    from playwright.async_api import async_playwright

    if mic is not None:
        args = [
            *FLAGS,
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
        ]
    else:
        args = [*FLAGS, "--deny-permission-prompts"]
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=args,
            viewport={"width": 720, "height": 760},
        )
        try:
            context.set_default_timeout(PATIENCE_MS)
            page = context.pages[0] if context.pages else await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            await context.close()


async def text_of(page, selector: str) -> str:
    return (await page.text_content(selector)) or ""


async def open_softphone(page, url: str) -> None:
    await page.goto(url + "/softphone")
    await page.wait_for_function(
        "() => document.getElementById('agent').options.length > 0"
        " || !document.getElementById('agent-name').hidden"
    )


def test_call_in_the_browser(tmp_path):
    mic = fake_mic_wav(tmp_path)
    screenshot = tmp_path / "softphone.png"

    async def main():
        async with (
            running_bridge(Settings()) as bridge,
            chromium_page(tmp_path, mic=mic) as (page, errors),
        ):
            await open_softphone(page, bridge.base_url)
            assert await page.is_disabled("#hangup")
            await page.click("#call")
            await page.wait_for_selector("#state[data-state='in-call']", timeout=PATIENCE_MS)
            assert await text_of(page, "#rate") == "24 kHz"
            assert await page.is_disabled("#call")

            # The greeting, then the echo of what the fake microphone said.
            await page.wait_for_selector("#transcript li.user", timeout=PATIENCE_MS)
            assert "caller speech" in await text_of(page, "#transcript li.user")
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#transcript li.assistant')]"
                ".some(li => li.textContent.includes('echo of caller speech'))",
                timeout=PATIENCE_MS,
            )
            await page.wait_for_function(
                f"() => +document.getElementById('played').dataset.ms > {GREETING_MS + 2500}",
                timeout=PATIENCE_MS,
            )
            assert "Hello, this is the echo agent" in await text_of(
                page, "#transcript li.assistant"
            )

            # The bridge saw the page play it: marks came back from the playback worklet.
            (session,) = bridge.app.softphone.sessions.values()
            greeting, echo = list(session.leg.items_sent)[:2]
            playout = session.call.playout
            assert playout.played_ms(greeting) >= GREETING_MS - 100
            assert playout.played_ms(echo) >= 2000
            assert session.leg.dropped_in == 0 and session.leg.dropped_audio == 0

            # Typing over the agent interrupts it: the page drops its queue at once (and
            # echoes the pending marks), the bridge truncates the echo where playback was.
            await page.fill("#say-text", "Stop there, please.")
            await page.click("#say-send")
            await _until(lambda: session.call.barge_ins, "the barge-in")
            barge = session.call.barge_ins[0]
            assert (barge.trigger, barge.item_id) == ("client", echo)
            # Frozen at the clear: marks echoed after it are not counted as played.
            played_echo = playout.played_ms(echo)
            assert 0 <= barge.audio_end_ms - played_echo <= 120, (barge, played_echo)
            # The reply plays normally after the clear.
            await _until(lambda: len(session.leg.items_sent) >= 3, "the reply")
            reply = session.leg.items_sent[2]
            await _until(lambda: playout.played_ms(reply) >= 1000, "1 s of the reply played")
            assert playout.played_ms(echo) == played_echo
            assert "Stop there, please." in await text_of(page, "#transcript")
            assert "echo of caller speech" in await text_of(page, "#transcript li.interrupted")
            await page.screenshot(path=str(screenshot), full_page=True)

            await page.click("#mute")
            assert await page.get_attribute("#mute", "aria-pressed") == "true"
            assert await text_of(page, "#mute") == "Unmute"

            await page.click("#hangup")
            await page.wait_for_selector("#state[data-state='ended']", timeout=PATIENCE_MS)
            assert "Call ended" in await text_of(page, "#alert")
            assert await page.is_enabled("#call")
            await _no_calls(bridge)
            assert errors == []

    asyncio.run(main())
    assert screenshot.stat().st_size > 10_000
    if keep := os.environ.get("SOFTPHONE_SCREENSHOT"):
        shutil.copy(screenshot, keep)


def test_refused_microphone_is_explained(tmp_path):
    async def main():
        async with (
            running_bridge(Settings()) as bridge,
            chromium_page(tmp_path, mic=None) as (page, errors),
        ):
            await open_softphone(page, bridge.base_url)
            await page.click("#call")
            await page.wait_for_selector("#alert:not([hidden])", timeout=PATIENCE_MS)
            assert "Microphone access was refused" in await text_of(page, "#alert")
            assert await page.get_attribute("#state", "data-state") == "error"
            assert await page.is_enabled("#call")
            assert not bridge.services.calls and errors == []

    asyncio.run(main())


def test_refusal_reason_token_and_unreachable_server(tmp_path):
    mic = fake_mic_wav(tmp_path)

    async def main():
        settings = Settings(softphone_token="let-me-in")
        async with chromium_page(tmp_path, mic=mic) as (page, errors):
            async with running_bridge(settings) as bridge:
                await open_softphone(page, bridge.base_url)
                assert await page.is_visible("#token")
                await page.click("#call")
                await page.wait_for_selector("#alert:not([hidden])", timeout=PATIENCE_MS)
                assert "this softphone needs an access token" in await text_of(page, "#alert")

                await page.fill("#token", "let-me-in")
                await page.click("#call")
                await page.wait_for_selector("#state[data-state='in-call']", timeout=PATIENCE_MS)
                await page.click("#hangup")
                await page.wait_for_selector("#state[data-state='ended']", timeout=PATIENCE_MS)
            # The server is gone; the page is still open.
            await page.click("#call")
            await page.wait_for_function(
                "() => document.getElementById('alert').textContent"
                ".includes('Cannot reach the server')",
                timeout=PATIENCE_MS,
            )
            assert await page.get_attribute("#state", "data-state") == "error"
            assert errors == []

    asyncio.run(main())


async def _until(predicate, what: str, timeout: float = PATIENCE_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _no_calls(bridge, timeout: float = PATIENCE_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while bridge.services.calls or bridge.app.softphone.sessions:
        assert loop.time() < deadline, "the call did not end"
        await asyncio.sleep(0.05)
