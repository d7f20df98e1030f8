"""Call records, pure: the record types and cutting the agent's words."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bridge.store.records
from bridge.store.records import CallRecord, TokenUsage, Turn, truncate_text

T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


# ---------------------------------------------------------------------- truncate_text


@pytest.mark.parametrize(
    ("heard", "total", "expected"),
    [
        (0, 1000, ""),
        (1000, 1000, "The quick brown fox jumps"),
        (1500, 1000, "The quick brown fox jumps"),
        (500, 1000, "The quick brown"),  # "brown" is 10..15 of 25: heard
        (360, 1000, "The quick"),  # 9 of 25 characters: "quick" ends there
        (200, 1000, "The"),  # 5 characters: less than half of "quick" (4..9)
        (500, 0, "The quick brown fox jumps"),  # unknown length: nothing cut
    ],
)
def test_truncate_text_cuts_between_words_in_proportion(heard, total, expected):
    assert truncate_text("The quick brown fox jumps", heard, total) == expected


def test_truncate_text_never_splits_a_word():
    text = "Supercalifragilistic expialidocious"
    for heard in range(0, 1001, 10):
        cut = truncate_text(text, heard, 1000)
        assert text.startswith(cut)
        assert cut in ("", "Supercalifragilistic", text)


# ---------------------------------------------------------------------- types


def test_records_refuse_naive_times_and_bad_values():
    naive = datetime(2025, 1, 1)
    with pytest.raises(ValueError, match="timezone"):
        Turn("user", "hi", naive)
    with pytest.raises(ValueError, match="role"):
        Turn("robot", "hi", T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="assistant"):
        Turn("user", "hi", T0, truncated=True)
    with pytest.raises(ValueError, match="id"):
        CallRecord(
            id="", leg="phone", direction="inbound", agent="a", from_="", to="", started_at=T0
        )
    with pytest.raises(ValueError, match="direction"):
        CallRecord(
            id="x",
            leg="phone",
            direction="sideways",  # type: ignore[arg-type]
            agent="a",
            from_="",
            to="",
            started_at=T0,
        )


def test_token_usage_sums_and_ignores_junk():
    usage = TokenUsage.from_realtime({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
    junk = TokenUsage.from_realtime(
        {"input_tokens": "many", "output_tokens": -3, "total_tokens": True}
    )
    assert usage + usage + junk == TokenUsage(20, 10, 30)


def test_the_record_types_import_no_io():
    source = Path(bridge.store.records.__file__)
    forbidden = {"asyncio", "sqlalchemy", "alembic", "starlette", "websockets", "twiml"}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in forbidden, f"records.py imports {name}"
