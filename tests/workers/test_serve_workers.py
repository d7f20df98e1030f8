"""``bridge serve --workers 2`` as a real subprocess on a free port, with the local agent:
calls land on both workers and ``/metrics`` counts them all whichever worker answers; SIGTERM
drains both workers with calls in flight and exits 0; a worker killed with SIGKILL is
replaced and the server still takes calls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bridge.sim.caller import simulate_call
from bridge.sim.result import CallResult
from tests.e2e import PATIENCE_S

TREE = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"bridge listening on http://127\.0\.0\.1:(\d+) with (\d+) workers")
# Settings that would change what these tests see, from the environment of the test run.
_UNSET = ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "PUBLIC_URL", "AGENTS_FILE", "DATABASE_URL")


@dataclass
class Served:
    proc: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)  # the supervisor's and workers' stderr
    base_url: str = ""

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.log))


@contextlib.contextmanager
def served(tmp_path: Path, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[Served]:
    environ = {k: v for k, v in os.environ.items() if k not in _UNSET and k != "WORKERS"}
    environ.update(
        PYTHONPATH=str(TREE), HOST="127.0.0.1", PORT="0", RECORDS_PATH="off", LOG_LEVEL="INFO"
    )
    environ.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--workers", str(workers)],
        cwd=tmp_path,  # no stray .env
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    s = Served(proc)
    listening = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            s.log.append(line)
            if match := LISTENING.search(line):
                s.base_url = f"http://127.0.0.1:{match[1]}"
                listening.set()
        listening.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert listening.wait(PATIENCE_S) and s.base_url, "".join(s.log)
        yield s
    finally:
        if proc.poll() is None:  # a failed test: stop at once (two signals), then for sure
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(PATIENCE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(PATIENCE_S)  # the workers gone too: the pipe is at its end
        assert proc.stderr is not None
        proc.stderr.close()


async def eventually(
    fetch: Callable[[], Awaitable[Any]], holds: Callable[[Any], bool], what: str
) -> Any:
    """Poll ``fetch()`` until ``holds`` its value; fail after ``PATIENCE_S``."""
    deadline = asyncio.get_running_loop().time() + PATIENCE_S
    while True:
        value = await fetch()
        if holds(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.05)


async def get(base_url: str, path: str) -> httpx.Response:
    """One request on a fresh connection: the kernel picks the worker anew each time."""
    async with httpx.AsyncClient(timeout=PATIENCE_S) as client:
        return await client.get(base_url + path)


async def figures(s: Served) -> dict[str, Any]:
    response = await get(s.base_url, "/metrics.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def started_total(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bridge_calls_started_total":
                return sample.value
    raise AssertionError("no bridge_calls_started_total")


def two_workers(f: dict[str, Any]) -> bool:
    return len(f["workers"]) == 2


def call(s: Served, n: int, **options: Any) -> asyncio.Task[CallResult]:
    """A simulated call from its own number (the per-caller cap is per worker)."""
    return asyncio.create_task(
        simulate_call(
            s.base_url, np.zeros(8000, np.int16), from_=f"+1555000{n:04d}", tail_s=0, **options
        )
    )


def test_calls_land_on_both_workers_and_every_scrape_counts_them_all(tmp_path: Path):
    async def main(s: Served) -> None:
        await eventually(lambda: figures(s), two_workers, "both workers up")
        made = 0
        # Pairs of short calls until both workers have taken some (the kernel decides).
        while made < 20:
            results = await asyncio.gather(*(call(s, made + i, hangup_after_s=0.3) for i in (0, 1)))
            made += 2
            assert all(r.closed_by == "caller" and not r.violations for r in results)
            f = await eventually(
                lambda: figures(s),
                lambda f: sum(w["calls_started"] for w in f["workers"]) == made,  # noqa: B023
                f"{made} calls in the figures",
            )
            if all(w["calls_started"] > 0 for w in f["workers"]):
                break
        else:
            raise AssertionError(f"every call went to one worker: {f['workers']}")

        # A worker's figures reach the others within a second: wait until every call's end
        # is in them (the last caller hanging up does not wait for the bridge's count).
        await eventually(
            lambda: figures(s),
            lambda f: f["calls_active"] == 0 and f["calls_started"] == made,
            "every call's end in the figures",
        )
        # Whichever worker answers, the whole server's count: scrape until both answered.
        answered: set[int] = set()
        for _ in range(400):
            f = await figures(s)
            assert f["calls_started"] == made and f["calls_active"] == 0
            assert f["calls_failed"] == 0 and len(f["workers"]) == 2
            answered.add(f["answered_by"]["pid"])
            text = (await get(s.base_url, "/metrics")).text
            assert started_total(text) == made
            if len(answered) == 2:
                break
        assert answered == {w["pid"] for w in f["workers"]}

    with served(tmp_path) as s:
        asyncio.run(main(s))
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(PATIENCE_S) == 0


def test_sigterm_drains_calls_in_flight_on_both_workers_then_exits_0(tmp_path: Path):
    async def main(s: Served) -> None:
        await eventually(lambda: figures(s), two_workers, "both workers up")
        hang_up = asyncio.Event()
        calls: list[asyncio.Task[CallResult]] = []
        # Long calls, one at a time, until both workers carry one live.
        while len(calls) < 12:
            calls.append(call(s, len(calls), hangup_after_s=PATIENCE_S, redirected=hang_up))
            f = await eventually(
                lambda: figures(s),
                lambda f: f["calls_active"] == len(calls),
                f"{len(calls)} live calls",
            )
            if all(w["calls_active"] > 0 for w in f["workers"]):
                break
        else:
            raise AssertionError(f"every call went to one worker: {f['workers']}")
        pids = {w["pid"] for w in f["workers"]}

        s.proc.send_signal(signal.SIGTERM)
        # Not ready at once, on every worker; new calls refused (the webhook's 503).
        ready = await eventually(
            lambda: get(s.base_url, "/readyz"), lambda r: r.status_code == 503, "not ready"
        )
        assert ready.json()["reason"] == "draining"
        for _ in range(10):  # whichever worker answers (fresh connections)
            assert (await get(s.base_url, "/readyz")).json()["reason"] == "draining"
        async with httpx.AsyncClient(timeout=PATIENCE_S) as client:
            webhook = await client.post(s.base_url + "/twilio/voice", data={"CallSid": "CA1"})
        assert webhook.status_code == 503
        f = await figures(s)
        assert {w["pid"] for w in f["workers"]} == pids and f["calls_active"] == len(calls)
        assert s.proc.poll() is None and not any(c.done() for c in calls)

        hang_up.set()  # the callers hang up: every call ends normally
        for result in await asyncio.gather(*calls):
            assert result.closed_by == "caller" and result.violations == []

    with served(tmp_path) as s:
        asyncio.run(main(s))
        assert s.proc.wait(PATIENCE_S) == 0
        assert not s.logged("died") and not s.logged("could not")
        assert s.logged("worker 0 (pid") and s.logged("drained and exited")


def test_a_killed_worker_is_replaced_and_its_calls_count_failed(tmp_path: Path):
    async def main(s: Served) -> None:
        f = await eventually(lambda: figures(s), two_workers, "both workers up")
        live = call(s, 1, hangup_after_s=PATIENCE_S)
        f = await eventually(lambda: figures(s), lambda f: f["calls_active"] == 1, "a live call")
        (victim,) = [w for w in f["workers"] if w["calls_active"] == 1]

        os.kill(victim["pid"], signal.SIGKILL)
        result = await live
        assert result.closed_by == "bridge"  # the caller lost the call with its worker
        f = await eventually(
            lambda: figures(s),
            lambda f: two_workers(f) and victim["pid"] not in {w["pid"] for w in f["workers"]},
            "a replacement worker",
        )
        assert {w["slot"] for w in f["workers"]} == {0, 1}
        assert f["calls_started"] == 1 and f["calls_failed"] == 1 and f["calls_active"] == 0
        text = (await get(s.base_url, "/metrics")).text
        failed = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "bridge_calls_ended_total" and sample.labels["outcome"] == "failed"
        ]
        assert failed == [1]
        assert s.logged(
            f"worker {victim['slot']} (pid {victim['pid']}) died (SIGKILL): 1 live call lost"
        )

        # The server still takes calls.
        for n in range(2, 6):
            after = await call(s, n, hangup_after_s=0.3)
            assert after.closed_by == "caller" and after.violations == []
        await eventually(lambda: figures(s), lambda f: f["calls_started"] == 5, "5 calls")

    with served(tmp_path) as s:
        asyncio.run(main(s))
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(PATIENCE_S) == 0


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path):
    with served(tmp_path, env={"DATABASE_URL": "mysql://db/records"}) as s:
        assert s.proc.wait(PATIENCE_S) == 1
        assert s.logged("could not start: stopping") and not s.logged("replacement")
