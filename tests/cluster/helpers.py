"""Helpers of the cluster tests: a redis-server process, and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bridge.cluster import Cluster, ClusterOptions, HangupHandler

START_TIMEOUT_S = 20.0
WAIT_TIMEOUT_S = 30.0  # a safety net only: tests wait for what they expect, not for time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_redis(binary: str, root: Path, port: int | None = None) -> RedisServer:
    """``redis-server`` on ``port`` (a free one if None), answering PING when returned."""
    for attempt in range(1, 4):
        chosen = port or free_port()
        log = root / f"redis-{chosen}.log"
        command = [
            binary,
            "--port", str(chosen),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(root),
            "--logfile", str(log),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if answers_ping(chosen):
                return RedisServer(process, chosen, root)
            time.sleep(0.02)  # polling a child process that has no readiness event
        server = RedisServer(process, chosen, root)
        server.stop()
        if port is not None or attempt == 3:  # another process may have taken the port
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"redis-server did not start on port {chosen}:\n{text}")
    raise AssertionError("unreachable")


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_TIMEOUT_S
) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after the safety net."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


FAST = ClusterOptions(lease_s=2.0, renew_s=0.3, breaker_poll_s=0.05, breaker_hold_s=2.0)


@contextlib.asynccontextmanager
async def two_instances(
    url: str,
    prefix: str,
    *,
    options: ClusterOptions = FAST,
    handlers: tuple[HangupHandler | None, HangupHandler | None] = (None, None),
    max_calls: int = 0,
    max_calls_per_caller: int = 0,
) -> AsyncIterator[tuple[Cluster, Cluster]]:
    """Instances A and B on one Redis, started; stopped (gracefully) at the end."""
    options = dataclasses.replace(options, prefix=prefix)
    caps = {"max_calls": max_calls, "max_calls_per_caller": max_calls_per_caller}
    a = Cluster(url, options=options, instance_id="instance-a", on_hangup=handlers[0], **caps)
    b = Cluster(url, options=options, instance_id="instance-b", on_hangup=handlers[1], **caps)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def all_redis_text(url: str) -> str:
    """Every key and value in the server, as one text (to look for numbers in it)."""
    client = aioredis.from_url(url, decode_responses=True)
    parts: list[str] = []
    try:
        async for key in client.scan_iter():
            parts.append(key)
            kind = await client.type(key)
            if kind == "string":
                parts.append(str(await client.get(key)))
            elif kind == "zset":
                parts += [str(m) for m in await client.zrange(key, 0, -1)]
    finally:
        await client.aclose()
    return "\n".join(parts)
