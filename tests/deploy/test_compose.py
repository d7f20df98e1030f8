"""docker-compose.yml, the nginx config in front of it, the Dockerfile and .dockerignore.

No container runtime here: the files are parsed and checked for what matters (two bridge
instances sharing their secret, Redis and PostgreSQL; a proxy that upgrades every WebSocket
route the app serves, sticky for Socket.IO; a non-root image with a health check and no
secret in it). The Dockerfile's health check command itself is run against a real bridge.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from starlette.routing import WebSocketRoute

from bridge.app import create_app
from bridge.config import Settings
from bridge.harness import running_bridge
from tests.deploy.nginxconf import Block, location_for, parse_nginx

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRET_NAMES = (
    "TWILIO_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "STREAM_TOKEN_SECRET",
    "SOFTPHONE_TOKEN",
    "ADMIN_TOKEN",
    "DATABASE_URL",
    "REDIS_URL",
    "POSTGRES_PASSWORD",
)
SHARED = ("STREAM_TOKEN_SECRET", "REDIS_URL", "DATABASE_URL")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _bridges() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {
        name: s
        for name, s in services.items()
        if str(s.get("image", "")).startswith("phone-bridge")
    }


def _seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def _nginx() -> Block:
    proxy = _compose()["services"]["proxy"]
    [mount] = [v for v in proxy["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro")]
    return parse_nginx((ROOT / mount.split(":")[0]).read_text(encoding="utf-8"))


# --- docker-compose.yml ----------------------------------------------------------------------


def test_two_bridge_instances_share_secret_redis_and_database():
    bridges = _bridges()
    assert len(bridges) >= 2
    envs = [b["environment"] for b in bridges.values()]
    for name in SHARED:
        values = {env.get(name) for env in envs}
        assert len(values) == 1 and None not in values and "" not in values, name
    services = _compose()["services"]
    database_url = envs[0]["DATABASE_URL"]
    assert database_url.startswith("postgresql://") and "@postgres:" in database_url
    assert "postgres" in services and envs[0]["REDIS_URL"].startswith("redis://redis:")
    assert "redis" in services


def test_no_secret_is_written_in_the_compose_file():
    for service in _compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if name not in SECRET_NAMES:
                continue
            value = str(value)
            if name.endswith("_URL"):
                # A URL may be literal (redis on the private network needs no password),
                # its password may not.
                password = re.search(r"://[^/@:]*:([^@]*)@", value)
                assert password is None or password.group(1).startswith("${"), name
            else:
                # Interpolated from .env (or the shell), never a literal.
                assert value.startswith("${"), f"{name} has a literal value"


def test_bridges_wait_for_healthy_backends_and_outlast_the_drain():
    services = _compose()["services"]
    assert "test" in services["postgres"]["healthcheck"]
    assert "test" in services["redis"]["healthcheck"]
    for bridge in _bridges().values():
        assert bridge["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert bridge["depends_on"]["redis"]["condition"] == "service_healthy"
        env = {k: str(v) for k, v in bridge["environment"].items() if "${" not in str(v)}
        drain = Settings.from_env(env, env_file=None).shutdown_drain_s
        assert _seconds(bridge["stop_grace_period"]) >= max(drain, Settings.shutdown_drain_s) + 5
        assert bridge.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert bridge["read_only"] is True


def test_the_proxy_is_a_trusted_proxy_of_the_bridges():
    proxy = _compose()["services"]["proxy"]
    address = proxy["networks"]["bridge-net"]["ipv4_address"]
    for bridge in _bridges().values():
        trusted = Settings.from_env(
            {"TRUSTED_PROXIES": bridge["environment"]["TRUSTED_PROXIES"]}, env_file=None
        ).trusted_proxies
        assert address in trusted


# --- the proxy (deploy/compose/nginx.conf) -----------------------------------------------------


def _websocket_paths() -> list[str]:
    """Every WebSocket route of the real app, with the settings that serve the most."""
    app: Any = create_app(Settings())
    while not hasattr(app, "routes"):
        app = app.other_asgi_app
    paths = [r.path for r in app.routes if isinstance(r, WebSocketRoute)]
    assert "/twilio/media" in paths
    return [*paths, "/socket.io/"]


def test_upstreams_are_the_bridge_instances():
    http = _nginx().child("http")
    bridges = set(_bridges())
    for upstream in http.children("upstream"):
        hosts = {s.args[0].split(":")[0] for s in upstream.children("server")}
        assert hosts == bridges, upstream.args


def test_every_websocket_route_is_upgraded():
    http = _nginx().child("http")
    [upgrade_map] = [
        m for m in http.children("map") if m.args == ["$http_upgrade", "$connection_upgrade"]
    ]
    assert ["default", "upgrade"] in [d.args and [d.name, *d.args] for d in upgrade_map.body]
    server = http.child("server")
    assert server.value("proxy_http_version") == ["1.1"]
    headers = [d.args for d in server.children("proxy_set_header")]
    for path in _websocket_paths():
        location = location_for(server, path)
        assert location is not None, f"no location serves {path}"
        assert location.value("proxy_pass"), path
        # nginx inherits proxy_set_header only into a location that sets none of its own.
        own = [d.args for d in location.children("proxy_set_header")]
        effective = own or headers
        assert ["Upgrade", "$http_upgrade"] in effective, path
        assert ["Connection", "$connection_upgrade"] in effective, path
        assert ["X-Forwarded-For", "$proxy_add_x_forwarded_for"] in effective, path
        timeout = location.value("proxy_read_timeout") or server.value("proxy_read_timeout")
        assert timeout and _seconds(timeout[0]) >= 600, f"{path}: a call outlives the timeout"


def test_socketio_is_sticky_and_the_rest_is_not():
    http = _nginx().child("http")
    server = http.child("server")
    upstreams = {u.args[0]: u for u in http.children("upstream")}

    def balancing(path: str) -> set[str]:
        location = location_for(server, path)
        assert location is not None
        target = location.value("proxy_pass")[0].removeprefix("http://").split("/")[0]
        return {d.name for d in upstreams[target].body}

    assert {"ip_hash"} & balancing("/socket.io/") or {"hash"} & balancing("/socket.io/")
    assert "ip_hash" not in balancing("/twilio/media")


def test_a_draining_instances_503_goes_to_the_next_one():
    location = location_for(_nginx().child("http").child("server"), "/twilio/voice")
    assert location is not None
    retry = location.value("proxy_next_upstream")
    assert "http_503" in retry and "non_idempotent" in retry


def test_metrics_are_not_public():
    location = location_for(_nginx().child("http").child("server"), "/metrics")
    assert location is not None and location.value("return") == ["404"]


# --- Dockerfile --------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_image_is_slim_python_311_and_runs_bridge_serve_as_non_root():
    final = _final_stage()
    assert final[0][1].startswith("python:3.11-slim")
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in final
    cmd = [rest for k, rest in final if k == "CMD"][-1]
    assert yaml.safe_load(cmd) == ["bridge", "serve"]  # exec form: the server is PID 1
    exposed = [rest for k, rest in final if k == "EXPOSE"]
    env = " ".join(rest for k, rest in final if k == "ENV")
    port = re.search(r"\bPORT=(\d+)", env)
    assert port and exposed == [port.group(1)]
    assert re.search(r"\bHOST=0\.0\.0\.0\b", env)


def test_image_installs_the_package_without_test_extras():
    runs = " ".join(rest for k, rest in _instructions() if k == "RUN")
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", runs)
    assert "[test" not in runs and "[dev" not in runs


def test_no_secret_is_baked_into_the_image():
    for keyword, rest in _instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            for name in SECRET_NAMES:
                assert name not in rest, f"{keyword} {name}"
        if keyword in ("COPY", "ADD"):
            assert ".env" not in rest.split()
    ignore = (ROOT / ".dockerignore").read_text().split()
    # An allow-list: everything is out unless named, so .env and keys never reach a layer.
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    assert not any(line.lstrip("!").startswith(".env") for line in ignore if line.startswith("!"))


def _healthcheck_argv() -> list[str]:
    [check] = [rest for k, rest in _final_stage() if k == "HEALTHCHECK"]
    exec_form = check[check.index("CMD ") + 4 :].strip()
    argv: list[str] = (
        yaml.safe_load(exec_form) if exec_form.startswith("[") else shlex.split(exec_form)
    )
    assert argv[0] == "python"
    assert any("/healthz" in a for a in argv)
    return [sys.executable, *argv[1:]]


def test_healthcheck_passes_on_a_live_bridge_and_fails_when_draining_or_down():
    argv = _healthcheck_argv()

    async def check(port: int) -> int:
        env = {**os.environ, "PORT": str(port)}
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stderr=asyncio.subprocess.PIPE)
        await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode

    async def main() -> None:
        async with running_bridge(Settings()) as bridge:
            port = int(bridge.base_url.rsplit(":", 1)[1])
            assert await check(port) == 0
            bridge.services.draining = True
            assert await check(port) != 0
        assert await check(port) != 0  # nothing listens any more

    asyncio.run(asyncio.wait_for(main(), 60))
