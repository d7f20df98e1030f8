"""``bridge bench``: ramp concurrent simulated calls, measure, compare with a minimal relay.

    bridge bench                         1, 10, 50, 100, 200 calls, 20 s each (7-9 min)
    bridge bench --steps 1,10,100 --duration 30 --ceiling 800 --json out/bench.json
    bridge bench --quick                 1 and 2 calls, a few seconds (what the tests run)
    bridge bench --compare               transcoding, μ-law in, μ-law pass-through, relay
    bridge bench --compare --repeat 3    each step 3 times, interleaved: medians (noisy hosts)
    bridge bench --workers 1,2           the bridge as 1, then 2 worker processes: calls per box
    bridge bench --core                  the call logic's own CPU, no I/O (bridge.bench.core)

Processes: the bridge and the minimal relay (``bridge.bench.relay``) each in their own
process pinned to CPU 0; the local agent and the load generator (``--load-procs``
processes, spread over the other CPUs) pinned to CPU 1 and up. For each
step N: N callers start (staggered), the server's histograms are reset once all stream,
the figures are taken over ``--duration`` seconds, then every caller hangs up. The same
step runs against the relay straight after. The ramp stops after the first step where a
bridge call heard a gap, sent a late frame, or ended abnormally, or at ``--ceiling``.
``--workers N``: the bridge as N worker processes on one port, unpinned, its figures
summed over them (``bridge.bench.workers``).

Then: a cProfile of the bridge at the highest clean N, and PESQ of both audio directions
(skipped, with one line, when ``pesq`` is not installed). ``--compare`` adds the bridge in
μ-law pass-through (``bridge.bench.compare``) to every step. Figures and their exact
definitions: ``bridge.bench.figures`` and the README.

This module owns the run (steps, ramp, retries, refinement) and the command line; the
child processes and CPU accounting are ``bridge.bench.procs``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.bench import compare, figures, procs, quality, report
from bridge.bench import workers as pool
from bridge.bench.procs import Proc, Target, machine, machine_busy_s, proc_cpu_s
from bridge.bench.profiling import render as render_profile

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DEFAULT_STEPS = (1, 10, 50, 100, 200)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cpus = procs.pinned_cpus(args.no_pin)
        self.load_cpus = procs.load_cpus(self.cpus)
        self.procs: list[Proc] = []
        self.agent: Proc | None = None
        self.targets: list[Target] = []
        self.scratch: str | None = None  # the servers' call records, removed at close

    # ------------------------------------------------------------------ processes

    def _module(
        self, module: str, *extra: str, env: dict[str, str] | None = None, stdin: bool = False
    ) -> Proc:
        proc = Proc.spawn(module.rsplit(".", 1)[1], ["-m", module, *extra], env, stdin)
        self.procs.append(proc)
        return proc

    def start_agent(self) -> str:
        extra = ["--cpu", str(self.cpus[1])] if self.cpus else []
        self.agent = self._module("bridge.bench.agent", *extra)
        self.agent.info = self.agent.expect(30)
        return str(self.agent.info["url"])

    def start_server(
        self, kind: str, model_url: str, label: str = "", extra_env: dict[str, str] | None = None
    ) -> Target:
        label = label or kind
        token = secrets.token_hex(16) if kind == "bridge" else None
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PUBLIC_URL", "AGENTS_FILE", "HOST", "PORT")
        }
        env.update(
            OPENAI_API_KEY="local-bench",
            OPENAI_REALTIME_URL=model_url,
            LOG_LEVEL="WARNING",
            MAX_CALLS=str(max(1000, 2 * max(self.steps()))),
        )
        if not (env.get("RECORDS_PATH") or env.get("DATABASE_URL")):
            # Records are part of every call, so they stay on: in a scratch file, not the cwd.
            self.scratch = self.scratch or tempfile.mkdtemp(prefix="bridge-bench-")
            env["RECORDS_PATH"] = os.path.join(self.scratch, f"records-{label}.db")
        env.update(extra_env or {})
        if token:
            env["TWILIO_AUTH_TOKEN"] = token
        else:
            env.pop("TWILIO_AUTH_TOKEN", None)
        module, extra = pool.server_command(kind, self.args.workers, self.cpus)
        proc = self._module(module, "--kind", kind, "--model-url", model_url, *extra, env=env)
        proc.info = proc.expect(60)
        self.targets.append(pool.target(label, proc, token))
        return self.targets[-1]

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    # ------------------------------------------------------------------ steps

    def steps(self) -> list[int]:
        a = self.args
        steps = sorted(set(a.steps))
        if a.ceiling:
            steps = [n for n in steps if n <= a.ceiling]
            while steps and steps[-1] * 2 <= a.ceiling:
                steps.append(steps[-1] * 2)
            if not steps or steps[-1] < a.ceiling:
                steps.append(a.ceiling)
        return steps

    def run_step(
        self, target: Target, n: int, duration: float, profile: bool = False
    ) -> dict[str, Any]:
        a = self.args
        per_proc = procs.split_calls(n, a.load_procs)
        loads = []
        for i, calls in enumerate(per_proc):
            cfg = {
                "base_url": target.base_url,
                "public_url": target.base_url,
                "auth_token": target.auth_token,
                "calls": calls,
                "stagger_s": len(per_proc) / a.ramp_rate,
                "seed": n * 100 + i,
                "caller_wav": str(a.caller),
                "codec": "pcm24" if target.kind == "relay" else "mulaw",
                "cpu": procs.load_cpu(self.load_cpus, i),
            }
            loads.append(self._module("bridge.bench.load", json.dumps(cfg), stdin=True))
        try:
            lives = [p.expect(60 + n / a.ramp_rate * 2) for p in loads]
            time.sleep(a.settle)
            side_pids = [p.pid for p in loads] + ([self.agent.pid] if self.agent else [])
            ours = [p.pid for p in self.procs if p not in loads and p is not self.agent]
            ours += [pid for t in self.targets for pid in t.worker_pids()]
            start = target.post("/bench/reset")
            side_a = sum(proc_cpu_s(pid) for pid in side_pids)
            ours_a = sum(proc_cpu_s(pid) for pid in ours) + time.process_time()
            busy_a = machine_busy_s()
            for p in loads:
                p.tell("window")
            if profile:
                target.post("/bench/profile/start")
            time.sleep(duration)
            prof = target.post("/bench/profile/stop") if profile else None
            end = target.stats()
            side_b = sum(proc_cpu_s(pid) for pid in side_pids)
            ours_b = sum(proc_cpu_s(pid) for pid in ours) + time.process_time()
            busy_b = machine_busy_s()
            for p in loads:
                p.tell("stop")
            results = [p.expect(60) for p in loads]
        finally:
            for p in loads:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(30)
                p.stop()
                self.procs.remove(p)
        target.wait_idle()
        step = figures.step(
            target.kind,
            n,
            start,
            end,
            lives,
            results,
            side_cpu_s=side_b - side_a,
            rss_base_kib=target.rss_base_kib,
            after=target.stats(),
            foreign_cpu_s=max(0.0, (busy_b - busy_a) - (side_b - side_a) - (ours_b - ours_a)),
            load_cores=procs.load_cores(self.load_cpus, len(per_proc)),
        )
        if prof is not None:
            step["profile"] = prof
        return step

    def _run_row(self, n: int, targets: list[Target]) -> dict[str, Any]:
        """One step against every server, ``--repeat`` times, interleaved (so each
        server's runs meet the same spells of noise); each server's figures are its
        median run's."""
        runs: dict[str, list[dict[str, Any]]] = {t.kind: [] for t in targets}
        for _ in range(self.args.repeat):
            for t in targets:
                runs[t.kind].append(self._run_once(t, n))
        row: dict[str, Any] = {"calls": n}
        row.update((kind, figures.median_run(done)) for kind, done in runs.items())
        figures.add_ratios(row, runs)
        return row

    def _run_once(self, target: Target, n: int) -> dict[str, Any]:
        a = self.args
        step = self.run_step(target, n, a.duration)
        _log(report.progress_line(step))
        for _ in range(a.retries):
            noisy = step["other_processes_cpu_load"] > figures.FOREIGN_BUSY
            if step["clean"] or not noisy:
                break
            _log("  other processes were busy meanwhile: running the step again")
            step = self.run_step(target, n, a.duration)
            _log(report.progress_line(step))
        return step

    def _refine(self, rows: list[dict[str, Any]], targets: list[Target]) -> list[dict[str, Any]]:
        """Bisect between the last clean step and the first failing one, ``--refine`` times."""
        for _ in range(self.args.refine):
            clean = [r["calls"] for r in rows if r["bridge"]["clean"]]
            failed = [r["calls"] for r in rows if not r["bridge"]["clean"]]
            if not clean or not failed:
                break
            lo, hi = max(clean), min(failed)
            mid = (lo + hi) // 2
            if mid in (lo, hi) or hi - lo < 10:
                break
            _log(f"refining between {lo} and {hi} calls: {mid}")
            rows = sorted([*rows, self._run_row(mid, targets)], key=lambda r: r["calls"])
        return rows

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        a = self.args
        out: dict[str, Any] = {"machine": machine(self.cpus), "config": _config(a, self.steps())}
        out["config"]["load_cpus"] = self.load_cpus or None
        _log(
            f"bridge bench: steps {self.steps()} calls, {a.duration:g} s each, "
            f"{pool.server_where(a.workers, self.cpus)}, agent and callers on CPU "
            f"{','.join(map(str, self.load_cpus)) or 'any'}"
        )
        model_url = self.start_agent()
        targets = [self.start_server("bridge", model_url)]
        if a.compare:
            for label, kind, env in compare.EXTRA_SERVERS:
                targets.append(self.start_server(kind, model_url, label, env))
        if not a.no_baseline or a.compare:
            targets.append(self.start_server("relay", model_url))
        for t in targets:  # lazy imports and first-call caches, before the memory baseline
            self.run_step(t, 2 * a.workers if t.worker_pids() else 1, min(2.0, a.duration))
            t.rss_base_kib = int(t.stats()["metrics"]["rss_kib"])
        rows: list[dict[str, Any]] = []
        for n in self.steps():
            row = self._run_row(n, targets)
            rows.append(row)
            if not row["bridge"]["clean"]:
                _log(f"  {n} calls: not clean ({row['bridge']['verdict']}); ramp stops here")
                break
        rows = self._refine(rows, targets)
        out["steps"] = rows
        out["summary"] = pool.summary(rows, a.workers)
        if not a.no_profile:
            n = out["summary"]["sustained_calls"] or 1
            _log(f"profiling the bridge at {n} calls for {a.profile_duration:g} s (cProfile)")
            prof_step = self.run_step(targets[0], n, a.profile_duration, profile=True)
            out["profile"] = {"calls": n, "seconds": a.profile_duration, **prof_step.pop("profile")}
        if not a.no_quality:
            out.update(quality_part(a.compare))
        out["targets"] = figures.targets(out)
        if a.compare:
            out["compare"] = compare.build(out)
        return out


def quality_part(compare: bool) -> dict[str, Any]:
    """The PESQ figures, or one line saying why there are none (``pesq`` not installed)."""
    if not quality.pesq_available():
        return {"quality_skipped": quality.SKIPPED}
    _log("PESQ of both audio directions")
    return {"quality": quality.measure(FIXTURES, compare=compare)}


def _config(a: argparse.Namespace, steps: list[int]) -> dict[str, Any]:
    return {
        "steps": steps,
        "duration_s": a.duration,
        "settle_s": a.settle,
        "ramp_rate_calls_per_s": a.ramp_rate,
        "load_processes": a.load_procs,
        "caller": Path(a.caller).name,
        "baseline": not a.no_baseline or a.compare,
        "compare": a.compare,
        "retries_on_noise": a.retries,
        "repeat": a.repeat,
        "refine": a.refine,
        "workers": a.workers,
    }


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bridge bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--steps",
        type=pool.int_list,
        default=list(DEFAULT_STEPS),
        help="concurrent calls per step (default: %(default)s)",
    )
    p.add_argument(
        "--ceiling",
        type=int,
        default=None,
        help="keep doubling past the last step up to this many calls",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help="seconds measured per step, once every call streams (default: 20)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between the last call starting and the window (default: 1)",
    )
    p.add_argument(
        "--ramp-rate", type=float, default=50.0, help="calls started per second (default: 50)"
    )
    p.add_argument(
        "--refine",
        type=int,
        default=1,
        help="extra steps bisecting between the last clean and the first failing step (default: 1)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run a step again when it was not clean while other processes on "
        "the machine were busy (default: 1)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every step this many times, the servers interleaved; report each "
        "server's median run and the median of the paired CPU ratios (default: 1)",
    )
    p.add_argument("--load-procs", type=int, default=1, help="load generator processes (1)")
    p.add_argument(
        "--compare",
        action="store_true",
        help="every step against four servers: the bridge transcoding, the bridge in μ-law "
        "pass-through (MODEL_AUDIO_FORMAT=pcmu), with μ-law only toward the model "
        "(MODEL_AUDIO_FORMAT=pcmu-in) and the minimal relay",
    )
    p.add_argument(
        "--caller",
        type=Path,
        default=FIXTURES / "caller-barge-in.wav",
        help="8 kHz mono WAV every caller plays, looped (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=Path("out/bench.json"),
        help="where to write every figure (default: %(default)s)",
    )
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="also write the result tables as Markdown (for the README)",
    )
    p.add_argument(
        "--profile-duration",
        type=float,
        default=10.0,
        help="seconds of cProfile at the highest clean step (default: 10)",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the profile")
    p.add_argument("--no-baseline", action="store_true", help="skip the minimal relay")
    p.add_argument("--no-quality", action="store_true", help="skip the PESQ figures")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 and 2 calls for a few seconds: checks the bench works, not speed",
    )
    pool.add_arguments(p)
    args = p.parse_args(argv)
    pool.settle_arguments(args)
    if args.repeat < 1:
        raise SystemExit("bridge bench: --repeat: at least 1")
    if args.quick:
        args.steps, args.duration, args.settle = [1, 2], 3.0, 0.5
        args.ceiling, args.profile_duration, args.ramp_rate = None, 2.0, 20.0
        args.refine = 0
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--soak" or a.startswith("--soak=") for a in argv):
        from bridge.bench.soak import main as soak_main

        return soak_main(argv)
    if "--core" in argv:
        from bridge.bench.core import main as core_main

        return core_main(argv)
    args = parse_args(argv)
    if len(args.worker_counts) > 1:
        return pool.run_counts(args, Bench)
    bench = Bench(args)
    try:
        result = bench.run()
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    finally:
        bench.close()
    print(report.render_text(result))
    if "profile" in result:
        print(
            "\nWhere the bridge's CPU goes at "
            f"{result['profile']['calls']} calls:\n" + render_profile(result["profile"])
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report.jsonable(result), indent=1) + "\n")
    print(f"\nAll figures: {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.render_markdown(result))
        print(f"Markdown tables: {args.markdown}")
    return 0
