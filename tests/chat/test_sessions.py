"""``bridge.softphone.resume.Sessions``: parking, resuming, expiring (no sockets)."""

from __future__ import annotations

import asyncio

from bridge.softphone.resume import Link, Sessions, resumable


def make(table: Sessions[str], sid: str, resume_id: str | None, log: list[str]) -> Link:
    link = Link(None, "/ns", sid)
    table.add(
        sid,
        sid,
        link,
        resume_id=resume_id,
        on_detach=lambda: log.append(f"detach {sid}"),
        on_expire=lambda reason: log.append(f"expire {sid}: {reason}"),
    )
    return link


def test_lost_connections_park_and_resume() -> None:
    async def main() -> None:
        log: list[str] = []
        table: Sessions[str] = Sessions(grace_s=30)
        link = make(table, "a", "r" * 16, log)
        make(table, "b", None, log)
        assert len(table) == 2 and table.known("r" * 16) and not table.known(None)

        assert table.lost("a", "transport close") and log == ["detach a"]
        assert link.sid is None and table.parked == 1 and len(table) == 2
        assert table.get("a") is None
        assert table.resume("r" * 16, "a2") == ("a", None)
        assert link.sid == "a2" and table.get("a2") == "a" and table.parked == 0
        # A second connection with the id takes over from a live one.
        assert table.resume("r" * 16, "a3") == ("a", "a2")
        assert table.get("a2") is None and table.get("a3") == "a"
        assert log == ["detach a", "detach a"]  # the old connection's audio may be lost

        # No resume id, or a deliberate disconnect: the session ends at once.
        table.lost("b", "transport close")
        table.lost("a3", "client disconnect")
        assert log[2:] == ["expire b: transport close", "expire a: client disconnect"]
        table.ended("a")
        table.ended("b")
        assert len(table) == 0 and not table.known("r" * 16)
        assert table.resume("r" * 16, "x") is None

    asyncio.run(main())


def test_past_the_grace_the_session_expires() -> None:
    async def main() -> None:
        log: list[str] = []
        table: Sessions[str] = Sessions(grace_s=0.05)
        make(table, "a", "r" * 16, log)
        table.lost("a", "ping timeout")
        deadline = asyncio.get_running_loop().time() + 30
        while len(log) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert log == ["detach a", "expire a: ping timeout, not back within 0.05 s"]

    asyncio.run(main())


def test_which_reasons_may_be_resumed() -> None:
    assert resumable("transport close") and resumable("ping timeout")
    assert not resumable("client disconnect") and not resumable("server disconnect")
