"""``bridge doctor`` against a loopback deployment: a real bridge (uvicorn) as the public
URL, the Twilio stand-in, the local agent as the OpenAI Realtime endpoint."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bridge.local_agent.server import Faults
from tests.outbound.helpers import deployment


def lines(out: str) -> dict[str, str]:
    """``{check name: its line}`` of the doctor's report."""
    found = {}
    for line in out.splitlines():
        level, _, rest = line.partition(" ")
        if level in ("OK", "WARN", "FAIL", "SKIP"):
            found[rest.strip().split(":")[0]] = line
    return found


def test_a_healthy_deployment_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            status, out, err = await dep.cli(monkeypatch, "doctor")
            found = lines(out)
            assert status == 0, out + err
            for name in ("public URL", "Twilio auth token", "webhook signature", "OpenAI key"):
                assert found[name].startswith("OK"), out
            assert found["clock"].startswith("OK") and "public URL" in found["clock"], out
            assert found["port"].startswith("OK") and "bridge is running" in found["port"]
            assert "All checks passed." in out
            [session] = dep.agent.sessions  # the key was tried with a real session
            assert session is not None

    asyncio.run(main())


def test_wrong_token_refused_key_and_a_foreign_port_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            dep.env["TWILIO_AUTH_TOKEN"] = "0" * 32
            dep.agent.faults = Faults(refuse_status=401, refuse_first=1)
            with socket.socket() as other:  # some other program holds the port
                other.bind(("127.0.0.1", 0))  # bound, answering nothing
                dep.env["PORT"] = str(other.getsockname()[1])
                status, out, _ = await dep.cli(monkeypatch, "doctor")
            found = lines(out)
        assert status == 1
        assert found["public URL"].startswith("OK"), out
        assert found["Twilio auth token"].startswith("FAIL"), out
        assert "TWILIO_AUTH_TOKEN" in found["Twilio auth token"]
        assert found["webhook signature"].startswith("FAIL"), out
        assert "TWILIO_AUTH_TOKEN" in found["webhook signature"]
        assert found["OpenAI key"].startswith("FAIL") and "refused" in found["OpenAI key"], out
        assert found["port"].startswith("FAIL") and "another program" in found["port"], out
        assert "fix:" in out

    asyncio.run(main())


def test_an_unreachable_public_url_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with deployment(tmp_path) as dep:
            with socket.socket() as closed:
                closed.bind(("127.0.0.1", 0))
                dep.env["PUBLIC_URL"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
            status, out, _ = await dep.cli(monkeypatch, "doctor")
            found = lines(out)
        assert status == 1
        assert found["public URL"].startswith("FAIL") and "not reachable" in found["public URL"]
        assert found["webhook signature"].startswith("FAIL"), out
        assert found["Twilio auth token"].startswith("OK"), out

    asyncio.run(main())
