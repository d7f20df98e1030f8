"""``bridge twilio numbers`` and ``bridge twilio setup`` (and its undo) against the Twilio
stand-in, through the real SDK and the real command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.outbound.helpers import deployment

NUMBER = "+15550142000"
OTHER = "+15550143000"
OLD_URL = "https://old.example.com/voice"


def test_numbers_setup_and_undo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            sid = dep.cloud.add_number(NUMBER, voice_url=OLD_URL, friendly_name="Front desk")
            dep.cloud.add_number(OTHER)
            public = dep.public_url

            status, out, err = await dep.cli(monkeypatch, "twilio", "numbers")
            assert status == 0, err
            assert NUMBER in out and OTHER in out and "Front desk" in out
            assert f"voice: POST {OLD_URL}" in out

            status, out, err = await dep.cli(monkeypatch, "twilio", "setup", "--number", NUMBER)
            assert status == 0, err
            assert f"voice_url: {OLD_URL} → {public}/twilio/voice" in out
            assert f"status_callback: (none) → {public}/twilio/status" in out
            number = dep.cloud.numbers[sid]
            assert number["voice_url"] == public + "/twilio/voice"
            assert number["status_callback"] == public + "/twilio/status"
            saved = tmp_path / "twilio-setup-15550142000.json"
            assert json.loads(saved.read_text())["previous"]["voice_url"] == OLD_URL
            update = [r for r in dep.cloud.requests if r.method == "POST"][-1]
            assert update.form["VoiceMethod"] == "POST" and update.auth_ok

            status, out, _ = await dep.cli(monkeypatch, "twilio", "numbers")
            assert f"{public}/twilio/voice  (this bridge)" in out
            # Twice: nothing to change, and the undo file keeps the original values.
            status, out, _ = await dep.cli(monkeypatch, "twilio", "setup", "--number", NUMBER)
            assert status == 0 and "nothing changed" in out
            assert json.loads(saved.read_text())["previous"]["voice_url"] == OLD_URL

            status, out, err = await dep.cli(
                monkeypatch, "twilio", "setup", "--number", NUMBER, "--undo"
            )
            assert status == 0, err
            assert f"voice_url: {public}/twilio/voice → {OLD_URL}" in out
            assert dep.cloud.numbers[sid]["voice_url"] == OLD_URL
            assert dep.cloud.numbers[sid]["status_callback"] == ""

            status, _, err = await dep.cli(
                monkeypatch, "twilio", "setup", "--number", "+15550000009"
            )
            assert status == 2 and "not a number of this Twilio account" in err

    asyncio.run(main())


def test_a_wrong_token_is_said_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            dep.env["TWILIO_AUTH_TOKEN"] = "0" * 32
            status, out, err = await dep.cli(monkeypatch, "twilio", "numbers")
            assert status == 1 and out == ""
            assert "auth token was refused" in err, err
            assert [r.auth_ok for r in dep.cloud.requests] == [False]

    asyncio.run(main())
