"""``LOG_FORMAT=json``: one JSON object per line, the call id attached, numbers and keys
masked; checked on single records and on every line a whole simulated call logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.logs import json_handler
from bridge.sim.caller import simulate_call
from tests.e2e import fixture, rig, run_undisturbed

SID = "CA" + "0123456789abcdef" * 2


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("tests.json")
    handler = json_handler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_a_line_is_json_with_the_call_id(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("call %s: from %s to %s", SID, "+15551234567", "sip:bob@example.com")
    logger.warning("softphone SP%s: hung up", "f" * 32)
    logger.info("no call here, key sk-abcdefghijklmnop")
    first, second, third = lines(stream)
    assert first["call_id"] == SID and first["level"] == "INFO"
    assert first["logger"] == "tests.json" and "time" in first
    assert first["message"] == f"call {SID}: from ***4567 to sip:bob@example.com"
    assert second["call_id"] == "SP" + "f" * 32 and second["level"] == "WARNING"
    assert "call_id" not in third
    assert "abcdefghijklmnop" not in third["message"]


def test_an_exception_stays_on_one_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("call %s: observer failed", SID)
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = lines(stream)
    assert line["call_id"] == SID and "ValueError: boom" in line["exc_info"]


def test_log_format_is_read_from_the_environment() -> None:
    assert Settings.from_env({}, env_file=None).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "json"}, env_file=None).log_format == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"}, env_file=None)


def test_the_cli_sets_up_json_logs() -> None:
    code = (
        "import logging; from bridge.cli import _setup_logging; "
        "_setup_logging('INFO', 'json'); "
        # Libraries' chatter at every start stays below INFO.
        "logging.getLogger('alembic.runtime.plugins').info('setup plugin x'); "
        f"logging.getLogger('bridge.x').info('call {SID}: ended: caller hung up')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    (line,) = [json.loads(text) for text in out.stderr.splitlines()]
    assert line["call_id"] == SID and line["logger"] == "bridge.x"


def test_every_line_of_a_simulated_call_is_json_and_names_the_call() -> None:
    stream = io.StringIO()
    handler = json_handler(stream)
    loggers = [logging.getLogger(name) for name in ("bridge", "twiml")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    async def main() -> str:
        async with rig() as r:
            result = await simulate_call(
                r.bridge.base_url,
                fixture("caller-hello.wav")[: 8000 * 3],
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                from_="+15559876543",
                tail_s=0.5,
            )
        return result.call_sid

    try:
        call_sid = run_and_return(main)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    records = lines(stream)
    about_call = [r for r in records if call_sid in r["message"]]
    assert len(about_call) >= 2  # the webhook and the call's start and end at least
    assert all(r.get("call_id") == call_sid for r in about_call)
    assert any("ended" in r["message"] for r in about_call)
    assert "9876543" not in stream.getvalue()


def run_and_return(main: Any) -> str:
    out: list[str] = []

    async def wrapper() -> None:
        out.append(await main())

    run_undisturbed(wrapper())
    return out[0]
