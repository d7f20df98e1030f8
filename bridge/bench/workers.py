"""``bridge bench --workers N``: the bench's side of a bridge running as N worker processes.

    bridge bench --workers 2             the bridge as 2 workers on one port (not pinned)
    bridge bench --workers 1,2           one whole run per count, then calls per box

Owns: the ``--workers`` option, which server process a target runs (``server_command``:
``bridge.bench.pool`` for N > 1, unpinned), talking to every worker of such a server
(``PoolTarget``), merging the workers' answers into one server's figures (``merge_stats``,
pure), and ``--workers 1,2`` (``run_counts``: one run per count, then ``per_box``, pure).
Does not touch a step's measurement (``bridge.bench.main``, ``bridge.bench.figures``) or
what a worker runs (``bridge.bench.pool``).

Whole-server figures: the workers share one listening socket, so a request reaches the
worker the kernel picks. ``/bench/reset``, ``/bench/stats`` and the profiler switches are
therefore sent on fresh connections until every worker has answered (each answer names its
pid; an idle pool of two splits about 85/15, so that takes a handful of requests), and the
answers are merged: counters, CPU seconds and RSS summed, histograms merged bin by bin.
Each worker's CPU is its own ``getrusage`` at the moment it answered; summed, it is the
merged ``/metrics.json``'s ``cpu_s`` without that file's up-to-a-second staleness for the
workers that did not answer. Resetting twice is harmless: the last answer of each counts.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pstats
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridge.bench import figures, report
from bridge.bench.measure import hist_load, hist_merge
from bridge.bench.procs import _NO_PROXY, Proc, Target
from bridge.bench.profiling import render as render_profile
from bridge.bench.profiling import summarise

MAX_TRIES = 400  # requests to reach every worker (fresh connections, ~1 ms each)
MAX_WORKERS = 64
SUMMED_OVER_MAX = ("uptime_s",)  # the rest of a snapshot's numbers are summed


# ---------------------------------------------------------------------- command line


def int_list(text: str) -> list[int]:
    """``1,10,50``: positive integers (``--steps``, ``--workers``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int_list,
        default=[1],
        help="the bridge as N worker processes on one port, as `bridge serve --workers N` "
        "(not pinned; default 1); a list (1,2) runs the whole bench per count and "
        "prints calls per box",
    )


def settle_arguments(args: argparse.Namespace) -> None:
    """``args.workers`` becomes one count (the first); every count is ``worker_counts``."""
    if max(args.workers) > MAX_WORKERS:
        raise SystemExit(f"bridge bench: --workers: at most {MAX_WORKERS}")
    args.worker_counts = list(dict.fromkeys(args.workers))
    args.workers = args.worker_counts[0]


# ---------------------------------------------------------------------- the server


def server_command(kind: str, workers: int, cpus: tuple[int, int] | None) -> tuple[str, list[str]]:
    """The module a server runs and its arguments: one pinned process, or N workers."""
    if kind == "bridge" and workers > 1:
        return "bridge.bench.pool", ["--workers", str(workers)]
    return "bridge.bench.server", ["--cpu", str(cpus[0])] if cpus else []


def server_where(workers: int, cpus: tuple[int, int] | None) -> str:
    if workers > 1:
        return f"server as {workers} workers on any CPU"
    return f"server on CPU {cpus[0] if cpus else 'any'}"


def request(base_url: str, method: str, path: str) -> dict[str, Any]:
    """One request on a fresh connection (urllib closes it): the kernel picks the worker."""
    req = urllib.request.Request(
        base_url + path, method=method, data=b"" if method == "POST" else None
    )
    with _NO_PROXY.open(req, timeout=60.0) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def gather(ask: Callable[[], dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """``ask()`` until ``workers`` different pids have answered: the last answer of each."""
    answers: dict[int, dict[str, Any]] = {}
    for _ in range(MAX_TRIES):
        body = ask()
        answers[int(body["pid"])] = body
        if len(answers) >= workers:
            return [answers[pid] for pid in sorted(answers)]
    raise RuntimeError(f"{len(answers)} of {workers} workers answered {MAX_TRIES} requests")


@dataclass
class PoolTarget(Target):
    """The bridge as ``workers`` processes: every ``/bench/*`` call reaches each of them."""

    workers: int = 2
    profile_dir: str = ""
    pids: list[int] = field(default_factory=list)

    def _all(self, method: str, path: str) -> list[dict[str, Any]]:
        answers = gather(lambda: self._call(method, path), self.workers)
        self.pids = [int(a["pid"]) for a in answers]
        return answers

    def stats(self) -> dict[str, Any]:
        return merge_stats(self._all("GET", "/bench/stats"))

    def post(self, path: str) -> dict[str, Any]:
        answers = self._all("POST", path)
        if path == "/bench/profile/start":
            return {"profiling": True}
        if path == "/bench/profile/stop":
            return merged_profile(self.profile_dir)
        return merge_stats(answers)

    def worker_pids(self) -> list[int]:
        return list(self.pids)


def target(label: str, proc: Proc, token: str | None) -> Target:
    """The target a server's ready line describes."""
    info = proc.info
    url = f"http://127.0.0.1:{info['port']}"
    if "worker_pids" not in info:
        return Target(label, proc, url, token)
    pids = [int(p) for p in info["worker_pids"]]
    return PoolTarget(
        label,
        proc,
        url,
        token,
        workers=int(info["workers"]),
        profile_dir=str(info["profile_dir"]),
        pids=pids,
    )


def merged_profile(profile_dir: str) -> dict[str, Any]:
    """Every worker's cProfile dump as one summary (and one raw file, as one process)."""
    files = sorted(str(p) for p in Path(profile_dir).glob("worker-*.pstats"))
    stats = pstats.Stats(*files)
    if dump := os.environ.get("BRIDGE_BENCH_PSTATS"):
        stats.dump_stats(dump)
    return {**summarise(stats), "workers_profiled": len(files)}


def summary(rows: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """The run's summary (``bridge.bench.figures``), saying how many workers; calls per box
    is the largest clean step (the one-process server's too)."""
    out = figures.summary(rows)
    return {**out, "workers": workers, "calls_per_box": out["sustained_calls"]}


# ---------------------------------------------------------------------- pure: merging


def merge_stats(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' ``/bench/stats`` answers (with ``raw`` histograms) as one server's.

    Counters, CPU seconds and RSS are summed, histograms merged bin by bin (their
    summaries recomputed), uptime is the longest; ``monotonic`` is the last answer's time
    (the clock is system-wide). ``workers`` keeps each worker's own figures, by pid.
    """
    hists = {
        name: hist_merge([hist_load(a["raw"][name]) for a in answers]) for name in answers[0]["raw"]
    }
    metrics: dict[str, Any] = {}
    for key, value in answers[0]["metrics"].items():
        if key in hists:
            metrics[key] = hists[key].summary()
        elif key in SUMMED_OVER_MAX:
            metrics[key] = max(a["metrics"][key] for a in answers)
        elif isinstance(value, int | float):
            metrics[key] = sum(a["metrics"][key] for a in answers)
        else:
            metrics[key] = value
    return {
        "metrics": metrics,
        "uplink_jitter": hists["uplink_jitter"].summary(),
        "uplink_late": sum(int(a["uplink_late"]) for a in answers),
        "loop_lag": hists["loop_lag"].summary(),
        "gc_pause": hists["gc_pause"].summary(),
        "gc_collections": [
            sum(g) for g in zip(*(a["gc_collections"] for a in answers), strict=True)
        ],
        "media_sockets": sum(int(a["media_sockets"]) for a in answers),
        "monotonic": max(a["monotonic"] for a in answers),
        "workers": [
            {
                "pid": a["pid"],
                "cpu_s": a["metrics"]["cpu_s"],
                "rss_kib": a["metrics"]["rss_kib"],
                "calls_started": a["metrics"]["calls_started"],
                "calls_active": a["metrics"]["calls_active"],
                "frames_in": a["metrics"]["frames_in"],
            }
            for a in sorted(answers, key=lambda a: int(a["pid"]))
        ],
    }


# ---------------------------------------------------------------------- pure: per box


def _common_clean_step(results: list[dict[str, Any]]) -> int | None:
    """The largest step every run ran clean: where their CPU per call compares."""
    clean = [{row["calls"] for row in r["steps"] if row["bridge"]["clean"]} for r in results]
    common = set.intersection(*clean) if clean else set()
    return max(common) if common else None


def per_box(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls per box for each worker count of ``--workers 1,2``.

    ``calls_per_box``: the largest clean step (calls sustained with no late frame);
    ``cpu_ms_per_call_s``: CPU summed over the workers per call-second, at the largest step
    every run ran clean, with its ratio to the first count's (it should not grow with
    workers); ``calls_per_core``: its inverse. ``shares_cores``: the machine has fewer
    cores than workers + 1, so the load generator and the local agent share them.
    """
    common = _common_clean_step(results)
    rows: list[dict[str, Any]] = []
    first_ms = math.nan
    for r in results:
        workers = int(r["config"].get("workers", 1))
        at = next((row for row in r["steps"] if row["calls"] == common), None)
        ms = float(at["bridge"]["cpu"]["ms_per_call_s"]) if at is not None else math.nan
        if not rows:
            first_ms = ms
        cores = int(r["machine"]["cpus"] or 1)
        rows.append(
            {
                "workers": workers,
                "calls_per_box": r["summary"]["sustained_calls"],
                "first_failing_step": (r["summary"].get("first_failing_step") or {}).get("calls"),
                "cpu_ms_per_call_s": ms,
                "x_first": round(ms / first_ms, 2) if first_ms > 0 else math.nan,
                "calls_per_core": round(1000.0 / ms, 1) if ms > 0 else math.nan,
                "cores": cores,
                "shares_cores": cores < workers + 1,
            }
        )
    return {"common_step": common, "rows": rows}


HEAD = [
    "workers",
    "calls per box (largest clean step)",
    "first failing step",
    "CPU ms per call-s",
    "x first count",
    "calls/core by CPU",
    "note",
]
SHARES = "load generator shares the cores"


def render_per_box(box: dict[str, Any], *, markdown: bool = False) -> str:
    """The calls-per-box table, as text (terminal) or Markdown."""
    _f = report._f
    cells = [
        [
            str(r["workers"]),
            str(r["calls_per_box"]),
            "-" if r["first_failing_step"] is None else str(r["first_failing_step"]),
            _f(r["cpu_ms_per_call_s"], ".3f"),
            _f(r["x_first"]),
            _f(r["calls_per_core"], ".0f"),
            f"{SHARES} ({r['cores']} cores)" if r["shares_cores"] else "",
        ]
        for r in box["rows"]
    ]
    step = box["common_step"]
    where = f"{step} calls, the largest step every run ran clean" if step else "no common step"
    title = f"Calls per box (CPU summed over the workers, at {where})"
    if markdown:
        return f"{title}:\n\n{report._md_table(HEAD, cells)}\n"
    return f"{title}\n{report._text_table(HEAD, cells)}"


# ---------------------------------------------------------------------- --workers 1,2


class _Bench(Protocol):
    def run(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def run_counts(args: argparse.Namespace, make_bench: Callable[[argparse.Namespace], _Bench]) -> int:
    """``--workers 1,2``: the whole bench once per count, each report, then calls per box."""
    results = []
    for workers in args.worker_counts:
        one = copy.copy(args)
        one.workers = workers
        print(f"bridge bench: the bridge as {workers} worker(s)", file=sys.stderr, flush=True)
        bench = make_bench(one)
        try:
            results.append(bench.run())
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            bench.close()
    box = per_box(results)
    for result in results:
        print(f"\n=== the bridge as {result['config']['workers']} worker(s)")
        print(report.render_text(result))
        if "profile" in result:
            print("\nWhere the bridge's CPU goes:\n" + render_profile(result["profile"]))
    print("\n" + render_per_box(box))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = {"calls_per_box": box, "runs": results}
    args.json.write_text(json.dumps(report.jsonable(out), indent=1) + "\n")
    print(f"\nAll figures: {args.json}")
    if args.markdown:
        parts = [report.render_markdown(r) for r in results]
        parts.append(render_per_box(box, markdown=True))
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(parts))
        print(f"Markdown tables: {args.markdown}")
    return 0
