"""Run the compose file's nginx config for real, in front of bridges on loopback ports.

Owns turning ``deploy/compose/nginx.conf`` into a config this machine's nginx can run
(upstream servers pointed at the given loopback ports, the listen port, the pid and temp
files in a temporary directory, no Docker DNS) and running nginx on it. Everything else in
the file (locations, headers, balancing, retries, timeouts) is run as written. It never
touches the bridges themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "nginx.conf"
INSTALL_HINT = "install Debian's nginx package (make setup-test does)"
START_TIMEOUT_S = 20.0


def nginx_binary() -> str:
    """nginx's path; without it the test fails under CI and is skipped, loudly, otherwise."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"nginx is missing: {INSTALL_HINT}")
        pytest.skip(f"nginx is missing: {INSTALL_HINT}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_config(text: str, listen: int, upstreams: dict[str, int], root: Path) -> str:
    """The compose config with ``host:port`` upstream servers mapped to loopback ports."""

    def server(match: re.Match[str]) -> str:
        host = match.group(1)
        if host not in upstreams:
            raise AssertionError(f"upstream server {host} is not one of {sorted(upstreams)}")
        # `resolve` follows Docker DNS; a loopback address needs none (and nginx < 1.27.3
        # does not know the parameter).
        return f"server 127.0.0.1:{upstreams[host]}"

    text, servers = re.subn(r"server ([\w.-]+):\d+(?: resolve)?", server, text)
    assert servers, "no upstream servers found"
    text, listens = re.subn(r"listen \d+;", f"listen 127.0.0.1:{listen};", text)
    assert listens == 1, "expected one listen directive"
    text = re.sub(r"\n\s*resolver [^;]*;", "", text)
    text = re.sub(r"pid [^;]*;", f"pid {root}/nginx.pid;", text)
    temp = "".join(
        f"\n    {kind}_temp_path {root}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {", "http {" + temp, 1)


@contextlib.asynccontextmanager
async def running_nginx(
    upstreams: dict[str, int], *, listen: int | None = None
) -> AsyncIterator[str]:
    """nginx on the compose config, in front of ``upstreams``, on ``listen`` (a free port
    when None); yields its base URL."""
    binary = nginx_binary()
    with tempfile.TemporaryDirectory(prefix="nginx-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # workers may run as another user (nginx started as root)
        port = listen or free_port()
        conf = root / "nginx.conf"
        conf.write_text(loopback_config(CONF.read_text(), port, upstreams, root))
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-p",
            str(root),
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            "daemon off;",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await _until_listening(proc, port)
            yield f"http://127.0.0.1:{port}"
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.communicate()


async def _until_listening(proc: asyncio.subprocess.Process, port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        if proc.returncode is not None:
            _, err = await proc.communicate()
            raise AssertionError(f"nginx exited {proc.returncode}: {err.decode()[-2000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise AssertionError("nginx did not listen in time") from None
            await asyncio.sleep(0.02)
        else:
            writer.close()
            await writer.wait_closed()
            return
