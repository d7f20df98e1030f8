"""The figures of one benchmark step, and the verdicts, from raw measurements. Pure.

Definitions (the README repeats them for users):

* CPU per call-second: the server process's own user+system CPU (``getrusage`` in the
  server, via ``/metrics.json``) over the window, divided by calls x window seconds. Calls per
  core = its inverse: how many such calls would fill one core. With ``--workers N``: summed
  over the N workers (each step's ``workers`` lists each one's share).
* added latency, uplink: from the bridge reading a caller frame to its
  ``input_audio_buffer.append`` handed to the model socket; downlink: from a model
  ``output_audio.delta`` read to the frames it released handed to the caller socket. Audio
  held back on purpose by the paced playout (the 160 ms lead) is not counted: that is
  the intentional playout lead. Measured in the server (``bridge.metrics``).
* uplink jitter: how late each caller frame was *read*, against its due time on the
  call's fastest frame (``bridge.bench.probe``); it adds event-loop queueing to the above.
* late frames: uplink, caller frames read more than two frame periods (40 ms) late;
  downlink, 20 ms frames of silence the caller heard *inside* an agent utterance because
  the next chunk of the same item arrived after the far end had run dry.
* trigger-to-clear: from the input that triggered a barge-in (the caller frame the local
  detector fired on, or the model's ``speech_started``) to ``clear`` handed to the socket.
* memory per live call: the server's RSS with every call live, less its RSS after a
  warm-up call, divided by the number of calls.
* load generator saturated (``load_saturated``): the local agent and the callers together
  kept the cores they run on (``load_cores``: one, CPU 1, on a 2-core machine) at least
  90% busy over the window. The server was then not pushed as hard as the step says, so
  its figures are bounded by the load generator; calls per core stays an extrapolation
  from CPU per call-second either way.
* other processes' CPU: the machine's busy time (``/proc/stat``) over the window less that
  of the benchmark's own processes; above 0.1 CPU the step's figures are flagged noisy.
* abnormal ends: calls that could not be set up, that the server closed before the
  caller hung up, or that the server itself recorded as failed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bridge.bench.measure import hist_load, hist_merge
from bridge.metrics import Histogram

LOAD_BUSY = 0.9  # agent + callers busy share of their cores from which they, not the server, limit
FRAME_MS = 20.0
FOREIGN_BUSY = 0.1  # CPUs used by processes outside the benchmark: the figures are noisy


def _delta(end: dict[str, Any], start: dict[str, Any], key: str) -> int:
    return int(end["metrics"][key]) - int(start["metrics"][key])


def _client(results: list[dict[str, Any]]) -> dict[str, Any]:
    stats = [r["stats"] for r in results]
    merged: dict[str, Any] = {}
    for key in stats[0] if stats else []:
        if isinstance(stats[0][key], dict):
            merged[key] = hist_merge([hist_load(s[key]) for s in stats])
        else:
            merged[key] = sum(s[key] for s in stats)
    return merged


def load_saturated(side_cpu_s: float, window_s: float, load_cores: int) -> bool:
    """Whether the agent + callers used at least ``LOAD_BUSY`` of the cores they run on."""
    if not (window_s > 0 and load_cores > 0) or side_cpu_s != side_cpu_s:
        return False
    return side_cpu_s / window_s / load_cores >= LOAD_BUSY


def worker_deltas(start: dict[str, Any], end: dict[str, Any]) -> list[dict[str, Any]]:
    """Each worker's CPU seconds and caller frames over the window, and its live calls."""
    before = {w["pid"]: w for w in start.get("workers", [])}
    return [
        {
            "pid": w["pid"],
            "cpu_s": round(w["cpu_s"] - before.get(w["pid"], {}).get("cpu_s", 0.0), 3),
            "frames_read": w["frames_in"] - before.get(w["pid"], {}).get("frames_in", 0),
            "calls_active": w["calls_active"],
        }
        for w in end.get("workers", [])
    ]


def _low(h: Histogram | None) -> dict[str, float]:
    if h is None or h.n == 0:
        return {"n": 0, "min_ms": math.nan, "p1_ms": math.nan}
    return {"n": h.n, "min_ms": round(h.quantile(0.0), 3), "p1_ms": round(h.quantile(0.01), 3)}


def step(
    kind: str,
    n: int,
    start: dict[str, Any],
    end: dict[str, Any],
    lives: list[dict[str, Any]],
    results: list[dict[str, Any]],
    *,
    side_cpu_s: float,
    rss_base_kib: int,
    after: dict[str, Any] | None = None,
    foreign_cpu_s: float = math.nan,
    load_cores: int = 1,
) -> dict[str, Any]:
    """Figures of one step from the server's stats at the window's start and end, the
    load processes' ``live`` and ``result`` lines, and the agent+callers' CPU (which ran
    on ``load_cores`` cores)."""
    m = end["metrics"]
    window = max(1e-9, end["monotonic"] - start["monotonic"])
    cpu = m["cpu_s"] - start["metrics"]["cpu_s"]
    per_call = cpu / (n * window) if n else math.nan
    c = _client(results)
    empty = Histogram()
    rss_per_call = (m["rss_kib"] - rss_base_kib) / n if n else math.nan
    uplink_late = int(end["uplink_late"])
    down_late = int(c.get("late_frames", 0))
    failed_end = after or end
    abnormal = {
        "setup_failed": sum(int(r["setup_failed"]) for r in results),
        "closed_by_server": sum(int(r["closed_by_server"]) for r in results),
        "server_failed": _delta(failed_end, start, "calls_failed"),
    }
    errors = {
        "model_errors": _delta(end, start, "model_errors"),
        "twilio_rejects": int(c.get("violations", 0)),
        "frames_dropped": _delta(end, start, "frames_dropped"),
    }
    send_lag = c.get("send_lag", empty)
    client_lag = c.get("loop_lag", empty)
    core1 = side_cpu_s / window
    saturated = load_saturated(side_cpu_s, window, load_cores)
    generator_bound = saturated or (client_lag.n > 0 and client_lag.quantile(0.99) > FRAME_MS)
    problems = []
    if uplink_late or down_late:
        problems.append(f"late frames: {uplink_late} up, {down_late} down")
    if errors["frames_dropped"]:
        problems.append(f"{errors['frames_dropped']} frames dropped")
    if errors["twilio_rejects"]:
        problems.append(f"{errors['twilio_rejects']} messages Twilio would reject")
    if sum(abnormal.values()):
        problems.append(f"abnormal ends: {abnormal}")
    clean = not problems
    verdict = "clean" if clean else "; ".join(problems)
    foreign = foreign_cpu_s / window
    if generator_bound:
        verdict += " (bounded by the load generator)"
    if foreign > FOREIGN_BUSY:
        verdict += f" (other processes used {foreign:.2f} CPU meanwhile)"
    return {
        "kind": kind,
        "calls": n,
        "streaming": sum(int(x.get("streaming", 0)) for x in lives),
        "window_s": round(window, 3),
        "cpu": {
            "server_s": round(cpu, 3),
            "core_load": round(cpu / window, 4),
            "ms_per_call_s": round(per_call * 1000, 4),
            "calls_per_core": round(1 / per_call, 1) if per_call > 0 else math.inf,
        },
        "latency_ms": {"uplink": m["uplink"], "downlink": m["downlink"]},
        "barge_in": {"clears_heard": int(c.get("clears", 0)), "trigger_to_clear_ms": m["clear"]},
        "uplink_jitter_ms": end["uplink_jitter"],
        "loop_lag_ms": end["loop_lag"],
        "gc": {"pause_ms": end["gc_pause"], "collections": end["gc_collections"]},
        "memory": {
            "rss_kib": m["rss_kib"],
            "rss_base_kib": rss_base_kib,
            "per_call_kib": round(rss_per_call, 1),
        },
        "frames": {
            "caller_frames_sent": int(c.get("frames_sent", 0)),
            "frames_read": _delta(end, start, "frames_in"),
            "uplink_late": uplink_late,
            "downlink_underruns": int(c.get("underruns", 0)),
            "downlink_late_frames": down_late,
            "downlink_headroom": _low(c.get("headroom")),
            "agent_media_messages": int(c.get("media_in", 0)),
            "marks_echoed": int(c.get("marks_echoed", 0)),
        },
        "errors": errors,
        "abnormal": abnormal,
        "generator": {
            "cpu_load_agent_and_callers": round(core1, 3),
            "cores": load_cores,
            "busy_share": round(core1 / max(1, load_cores), 3),
            "late_caller_frames": int(c.get("send_late", 0)),
            "send_lag_ms": send_lag.summary(),
            "loop_lag_ms": client_lag.summary(),
            "saturated": generator_bound,
        },
        "other_processes_cpu_load": round(foreign, 3),
        "load_saturated": saturated,
        # Counters are kept across steps: this sees a model refusing every session at setup
        # (before the window), e.g. an audio format the agent does not take.
        "model_errors_since_start": int(m["model_errors"]),
        "clean": clean,
        "verdict": verdict,
        **({"workers": worker_deltas(start, end)} if "workers" in end else {}),
    }


def _ms(summary: dict[str, Any], key: str = "p99_ms") -> float:
    """A figure of a histogram summary; NaN where it has none (``n`` = 0 gives None)."""
    value = summary.get(key)
    return math.nan if value is None else float(value)


def _ratio(a: float, b: float) -> float:
    if not (a == a and b == b) or b <= 0:  # NaN or no baseline
        return math.nan
    return round(a / b, 2)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median CPU per call-second (the lower middle one of an even count),
    with every run's figure beside it. The step is clean when most of its runs were (a
    hiccup of a shared host can make one run of even a single call late); the verdict
    names the runs that were not."""
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda s: s["cpu"]["ms_per_call_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["runs"] = {
        "ms_per_call_s": [s["cpu"]["ms_per_call_s"] for s in runs],
        "clean": [s["clean"] for s in runs],
    }
    unclean = [s for s in runs if not s["clean"]]
    if unclean:
        median["clean"] = 2 * len(unclean) < len(runs)
        which = f"{len(unclean)} of {len(runs)} runs: {unclean[0]['verdict']}"
        median["verdict"] = f"clean ({which})" if median["clean"] else f"NOT clean ({which})"
    return median


def cpu_ratio(runs: list[dict[str, Any]], relay_runs: list[dict[str, Any]]) -> float:
    """CPU per call-second over the relay's. With repeated runs, the median of the
    ratios of runs made one after the other (run i / relay run i): a spell of noise on
    the host shifts both sides of a pair."""
    pairs = list(zip(runs, relay_runs, strict=False))
    ratios = [_ratio(x["cpu"]["ms_per_call_s"], y["cpu"]["ms_per_call_s"]) for x, y in pairs]
    return round(statistics.median(ratios), 2) if ratios else math.nan


def add_ratios(row: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> None:
    """Every server's CPU over the relay's (``cpu_x_relay``) and bridge / relay for every
    cost figure of one step (``ratio``), when the relay ran. ``runs``: each server's
    runs of the step, in the order they ran."""
    b, r = row.get("bridge"), row.get("relay")
    if not b or not r:
        return
    row["cpu_x_relay"] = {kind: cpu_ratio(done, runs["relay"]) for kind, done in runs.items()}
    row["ratio"] = {
        "cpu_per_call": row["cpu_x_relay"]["bridge"],
        "memory_per_call": _ratio(b["memory"]["per_call_kib"], r["memory"]["per_call_kib"]),
        "uplink_p99": _ratio(_ms(b["latency_ms"]["uplink"]), _ms(r["latency_ms"]["uplink"])),
        "downlink_p99": _ratio(_ms(b["latency_ms"]["downlink"]), _ms(r["latency_ms"]["downlink"])),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    failed = next((row for row in rows if not row["bridge"]["clean"]), None)
    clean = [
        row
        for row in rows
        if row["bridge"]["clean"] and (failed is None or row["calls"] < failed["calls"])
    ]
    best = clean[-1] if clean else None
    return {
        "sustained_calls": best["calls"] if best else 0,
        "calls_per_core_estimate": best["bridge"]["cpu"]["calls_per_core"] if best else None,
        "cpu_ratio_at_sustained": (best.get("ratio") or {}).get("cpu_per_call") if best else None,
        "first_failing_step": {"calls": failed["calls"], "verdict": failed["bridge"]["verdict"]}
        if failed
        else None,
        "generator_saturated_at": next(
            (row["calls"] for row in rows if row["bridge"]["generator"]["saturated"]), None
        ),
        # Any server's: with --compare, the relay's and the pass-through's steps load the
        # agent differently from the bridge's.
        "load_saturated_at": next(
            (
                row["calls"]
                for row in rows
                if any(isinstance(v, dict) and v.get("load_saturated") for v in row.values())
            ),
            None,
        ),
    }


def _row(rows: list[dict[str, Any]], calls: int) -> dict[str, Any] | None:
    return next((row for row in rows if row["calls"] == calls), None)


def _relay_capacity(rows: list[dict[str, Any]]) -> str:
    """The minimal relay's calls per core at the largest step it ran: about what this
    machine's core can carry at all. A call's share of fixed costs shrinks as calls are
    added, so the figure bounds the machine only once the relay used half its core."""
    row = next((row for row in reversed(rows) if row.get("relay")), None)
    if row is None:
        return ""
    cpu = row["relay"]["cpu"]
    text = f"; the minimal relay ~{cpu['calls_per_core']} calls/core by CPU at {row['calls']} calls"
    if cpu["calls_per_core"] < 200 and cpu["core_load"] >= 0.5:
        text += (
            f" (at {cpu['core_load']:.0%} of its core: no server can show 200 calls"
            " on one core of this machine)"
        )
    return text


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, with the measured figure and whether it is met (None:
    not measured in this run)."""
    rows = out.get("steps", [])
    s = out.get("summary", {})
    best = _row(rows, s.get("sustained_calls", 0))
    at100 = _row(rows, 100)
    res: list[dict[str, Any]] = []

    sustained = s.get("sustained_calls", 0)
    saturated = s.get("load_saturated_at")
    if sustained:
        measured = (
            f"{sustained} calls clean (largest clean step); "
            f"~{s.get('calls_per_core_estimate')} calls/core by CPU"
        )
        if saturated is not None:
            measured += f" (extrapolated: the load generator saturated at {saturated} calls)"
    else:
        measured = "no step clean"
        if saturated is not None:
            measured += f" (the load generator saturated at {saturated} calls)"
    res.append(
        {
            "target": ">= 200 concurrent calls on one core, no late frames",
            "measured": measured + _relay_capacity(rows),
            "met": sustained >= 200,
        }
    )
    if at100 is not None:
        b100 = at100["bridge"]
        up = _ms(b100["latency_ms"]["uplink"])
        down = _ms(b100["latency_ms"]["downlink"])
        jitter = _ms(b100["uplink_jitter_ms"])
        # Processing time alone says nothing when frames queue up before it starts.
        res.append(
            {
                "target": "added latency p99 <= 5 ms per direction at 100 calls",
                "measured": f"processing: uplink {up:.2f} ms, downlink {down:.2f} ms; "
                f"uplink jitter (queueing) {jitter:.1f} ms"
                + ("" if b100["clean"] else "; the step was not clean"),
                "met": max(up, down) <= 5.0 and b100["clean"],
            }
        )
        clear = _ms(at100["bridge"]["barge_in"]["trigger_to_clear_ms"])
        res.append(
            {
                "target": "barge-in: clear <= 5 ms after the trigger (p99, 100 calls)",
                "measured": f"{clear:.2f} ms" if clear == clear else "no barge-in seen",
                "met": clear <= 5.0 if clear == clear else None,
            }
        )
    else:
        res.append(
            {
                "target": "added latency p99 <= 5 ms per direction at 100 calls",
                "measured": "100 calls not run",
                "met": None,
            }
        )
    if best is not None:
        mem = best["bridge"]["memory"]["per_call_kib"]
        res.append(
            {
                "target": "<= 200 KiB RSS per live call",
                "measured": f"{mem:.0f} KiB at {best['calls']} calls",
                "met": mem <= 200,
            }
        )
        ratio = (best.get("ratio") or {}).get("cpu_per_call", math.nan)
        res.append(
            {
                "target": "CPU per call within 1.5x of the minimal relay",
                "measured": f"{ratio:.2f}x at {best['calls']} calls"
                if ratio == ratio
                else "no baseline",
                "met": ratio <= 1.5 if ratio == ratio else None,
            }
        )
    quality = out.get("quality")
    if quality:
        up, down = quality["uplink"]["streamed"], quality["downlink"]["streamed"]
        res.append(
            {
                "target": f"PESQ-NB >= {quality['bar']} both directions (DESIGN.md)",
                "measured": f"uplink {up:.2f}, downlink {down:.2f}",
                "met": min(up, down) >= quality["bar"],
            }
        )
    return res
