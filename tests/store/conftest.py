"""Fixtures for the call-record tests: a real PostgreSQL server, and one URL per backend.

``postgres`` (session-scoped) starts Debian's PostgreSQL (``/usr/lib/postgresql/*/bin``)
in a temporary directory on a free port: ``initdb`` with trust authentication for the
``postgres`` superuser, a server listening on 127.0.0.1 only with its socket in the same
directory and durability switched off (fsync, synchronous_commit: test data), and
``pg_ctl stop`` at the end. PostgreSQL refuses to run as root, so as root it runs as the
``postgres`` system user (``runuser``). Without the binaries the tests FAIL when ``CI`` is
set ("true"/"1") and are skipped, loudly, otherwise; ``make setup-test`` installs them.

``db_url`` gives each test an empty database on each backend: a SQLite file in the test's
temporary directory, and a fresh database on the shared PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

INSTALL_HINT = "install Debian's postgresql package (make setup-test does)"
START_TIMEOUT_S = 60


def find_postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin directory with initdb and pg_ctl, or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path  # data/, the socket and the log live here
    port: int
    as_user: list[str]  # the command prefix that runs a server binary (runuser as root)
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL (``postgresql://``, as a user would write it)."""
        name = f"records_{os.getpid()}_{next(self._names)}"
        self.run("createdb", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def run(self, binary: str, *args: str) -> None:
        command = [*self.as_user, str(self.bin_dir / binary), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{binary} failed ({done.returncode}): {done.stderr.strip()}\n{log}".strip()
            )

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
                "-c shared_buffers=32MB",
            ]
        )
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(START_TIMEOUT_S), "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def _missing(message: str) -> NoReturn:
    loud = f"\n*** PostgreSQL tests NOT RUN: {message} ***\n"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(loud, pytrace=False)
    sys.stderr.write(loud)
    pytest.skip(loud)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _missing(f"initdb/pg_ctl not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    as_user: list[str] = []
    # mkdtemp in /tmp: pytest's own temporary tree is private to root, so the postgres
    # user could not reach a directory inside it.
    root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            _missing("running as root and runuser is missing")
        try:
            shutil.chown(root, user="postgres", group="postgres")
        except LookupError:
            _missing(f"running as root and there is no postgres system user: {INSTALL_HINT}")
        as_user = [str(runuser), "-u", "postgres", "--"]
    server = PostgresServer(bin_dir, root, 0, as_user)
    try:
        server.run(
            "initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        for attempt in itertools.count(1):  # another process may take the port first
            server.port = free_port()
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 3:
                    raise
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend, as the app would be configured with it."""
    if request.param == "sqlite":
        return str(tmp_path / "records" / "calls.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()
