"""A deployment on loopback for outbound and set-up tests: the Twilio REST stand-in, a
real bridge (uvicorn) whose PUBLIC_URL is itself, and the local agent as the OpenAI
Realtime endpoint. Settings come from one environment, as ``bridge`` reads it, so the
command line (run in a worker thread) and the server agree."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from bridge import cli
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.harness import RunningBridge, running_bridge
from bridge.local_agent import LocalAgentServer, serve_local_agent
from bridge.server import free_socket
from bridge.sim.twilio_cloud import TwilioCloud
from bridge.sim.webhook import sign

CALLER_ID = "+15550100000"
CALLEE = "+15550123456"
VOICEMAIL = "Hi, this is the clinic calling about your appointment. Please call us back."
AGENTS = f"""
[agents.sales]
greeting = "Hello from sales."
voicemail = "{VOICEMAIL}"
"""


class Timeline:
    """Every call's events (an observer on the bridge's services)."""

    def __init__(self) -> None:
        self.events: dict[str, list[CallEvent]] = defaultdict(list)

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        self.events[call.call_sid].extend(events)

    def kinds(self, sid: str, kind: str) -> list[dict[str, Any]]:
        return [e.detail for e in self.events[sid] if e.kind == kind]

    def said(self, sid: str) -> list[str]:
        return [d["text"] for d in self.kinds(sid, "transcript") if d.get("role") == "assistant"]


@dataclass
class Deployment:
    env: dict[str, str]
    settings: Settings
    cloud: TwilioCloud
    bridge: RunningBridge
    agent: LocalAgentServer
    tmp: Path
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def public_url(self) -> str:
        return self.bridge.public_url

    async def post_signed(
        self, path: str, params: dict[str, str], *, token: str | None = "ours"
    ) -> int:
        """POST a Twilio callback to the bridge, signed with ``token`` ("ours": the
        deployment's auth token; None: unsigned)."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        key = self.cloud.auth_token if token == "ours" else token
        if key is not None:
            headers["X-Twilio-Signature"] = sign(key, self.public_url + path, params)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.bridge.base_url + path, data=urlencode(params), headers=headers
            ) as response,
        ):
            return response.status

    async def cli(self, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
        """Run ``bridge ARGV`` with the deployment's environment: (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with monkeypatch.context() as m:
            for name, value in self.env.items():
                m.setenv(name, value)
            m.chdir(self.tmp)
            m.setattr("sys.stdout", out)
            m.setattr("sys.stderr", err)
            status = await asyncio.to_thread(cli.main, list(argv))
        return status, out.getvalue(), err.getvalue()


def deployment_env(cloud: TwilioCloud, port: int, agent_url: str, tmp: Path) -> dict[str, str]:
    agents = tmp / "agents.toml"
    agents.write_text(AGENTS, encoding="utf-8")
    return {
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "TWILIO_ACCOUNT_SID": cloud.account_sid,
        "TWILIO_AUTH_TOKEN": cloud.auth_token,
        "TWILIO_API_BASE_URL": cloud.url,
        "TWILIO_CALLER_ID": CALLER_ID,
        "STREAM_TOKEN_SECRET": secrets.token_hex(32),
        "OPENAI_API_KEY": "sk-test-key",
        "OPENAI_REALTIME_URL": agent_url,
        "AGENTS_FILE": str(agents),
        "ADMIN_TOKEN": "admin-" + secrets.token_hex(8),
        "RECORDS_PATH": "off",
        "LOG_LEVEL": "WARNING",
    }


@contextlib.asynccontextmanager
async def deployment(tmp: Path, **overrides: str) -> AsyncIterator[Deployment]:
    with TwilioCloud() as cloud:
        agent = await serve_local_agent("127.0.0.1", 0)
        sock = free_socket()
        try:
            env = deployment_env(cloud, sock.getsockname()[1], agent.url, tmp) | overrides
            settings = Settings.from_env(env, env_file=None)
            async with running_bridge(settings, sock=sock) as bridge:
                dep = Deployment(env, settings, cloud, bridge, agent, tmp)
                bridge.services.observers.append(dep.timeline.observe)
                yield dep
        finally:
            sock.close()
            await agent.close()
