"""Fixtures for the cluster tests: a real Redis server, and a key prefix per test.

``redis_server`` (session-scoped) starts Debian's ``redis-server`` on a free loopback port
in a temporary directory, with persistence off (``--save '' --appendonly no``), waits
until it answers PING, and stops it at the end. Without ``redis-server`` the tests FAIL
(never skip): ``make setup-test`` installs it. ``prefix`` gives each test its own keys
(``ClusterOptions.prefix``), so tests share the server without seeing each other.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import RedisServer, start_redis

INSTALL_HINT = "install Debian's redis-server package (make setup-test does)"


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"\n*** cluster tests NOT RUN: redis-server not found: {INSTALL_HINT} ***\n")
    return binary


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="bridge-redis-"))
    server = None
    try:
        server = start_redis(redis_binary, root)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


_tests = itertools.count(1)


@pytest.fixture
def prefix() -> str:
    """Key prefix of one test: its own hash tag, so its keys are its own."""
    return f"{{test{next(_tests)}-{uuid.uuid4().hex[:8]}}}:"


# The records tests' PostgreSQL server (Debian's, on a free port): the instances here share
# one database as a cluster does.
from tests.store.conftest import postgres  # noqa: E402, F401
