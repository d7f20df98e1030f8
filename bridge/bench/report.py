"""The benchmark's result as text tables (terminal), Markdown (README) and JSON. Pure."""

from __future__ import annotations

import math
from typing import Any

from bridge.bench import compare


def _f(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "-"
    return format(value, spec)


def _pmm(h: dict[str, Any]) -> str:
    if not h.get("n"):
        return "-"
    return f"{_f(h['p50_ms'])} / {_f(h['p99_ms'])} / {_f(h['max_ms'])}"


def progress_line(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    return (
        f"  {s['calls']:>4} calls {s['kind']:<6} CPU {s['cpu']['core_load'] * 100:5.1f}% "
        f"({_f(s['cpu']['ms_per_call_s'], '.2f')} ms/call-s), "
        f"up p99 {_f(lat['uplink']['p99_ms'])} ms, down p99 {_f(lat['downlink']['p99_ms'])}"
        f" ms, RSS/call {_f(s['memory']['per_call_kib'], '.0f')} KiB, "
        f"agent+callers CPU {s['generator']['cpu_load_agent_and_callers'] * 100:.0f}%: "
        f"{s['verdict']}"
    )


BOUNDED = " (bounded by the load generator)"


def _rows(result: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    out = []
    for row in result.get("steps", []):
        ratio = row.get("ratio", {})
        for kind in compare.SERVERS:
            if kind in row:
                out.append((row, row[kind], ratio if kind == "bridge" else {}))
    return out


COST_HEAD = [
    "calls",
    "server",
    "CPU load",
    "CPU ms per call-s",
    "x relay",
    "calls/core",
    "RSS KiB/call",
    "x relay",
    "late frames up/down",
    "errors",
    "abnormal ends",
    "agent+callers CPU",
    "other CPU",
    "verdict",
]
LATENCY_HEAD = [
    "calls",
    "server",
    "uplink p50/p99/max",
    "x relay p99",
    "downlink p50/p99/max",
    "x relay p99",
    "trigger→clear p50/p99 (n)",
    "uplink jitter p99/max",
    "loop lag p99/max",
    "downlink headroom min",
]


def _cost_cells(row: dict[str, Any], s: dict[str, Any], ratio: dict[str, Any]) -> list[str]:
    f = s["frames"]
    down = "-" if s["kind"] == "relay" else str(f["downlink_late_frames"])
    return [
        str(row["calls"]),
        s["kind"],
        f"{s['cpu']['core_load'] * 100:.1f}%",
        _cpu_cell(s),
        _f(ratio.get("cpu_per_call"), ".2f"),
        _f(s["cpu"]["calls_per_core"], ".0f"),
        _f(s["memory"]["per_call_kib"], ".0f"),
        _f(ratio.get("memory_per_call"), ".2f"),
        f"{f['uplink_late']}/{down}",
        str(sum(s["errors"].values())),
        str(sum(s["abnormal"].values())),
        f"{s['generator']['cpu_load_agent_and_callers'] * 100:.0f}%",
        f"{_f(s.get('other_processes_cpu_load', math.nan) * 100, '.0f')}%",
        _verdict_cell(s),
    ]


def _verdict_cell(s: dict[str, Any]) -> str:
    # Repeated: the verdict, which names the runs that were not clean, and why.
    text = str(s["verdict"]) if "runs" in s else ("clean" if s["clean"] else "NOT clean")
    return text + (BOUNDED if s.get("load_saturated") and BOUNDED not in text else "")


def _cpu_cell(s: dict[str, Any]) -> str:
    """CPU ms per call-second; of repeated runs, the median and the range of every run."""
    runs = s.get("runs", {}).get("ms_per_call_s")
    if not runs:
        return _f(s["cpu"]["ms_per_call_s"], ".3f")
    return f"{s['cpu']['ms_per_call_s']:.2f} ({min(runs):.2f}-{max(runs):.2f})"


def _latency_cells(row: dict[str, Any], s: dict[str, Any], ratio: dict[str, Any]) -> list[str]:
    lat = s["latency_ms"]
    clear = s["barge_in"]["trigger_to_clear_ms"]
    clear_text = (
        f"{_f(clear['p50_ms'])} / {_f(clear['p99_ms'])} ({clear['n']})" if clear.get("n") else "-"
    )
    jit, lag = s["uplink_jitter_ms"], s["loop_lag_ms"]
    head = s["frames"]["downlink_headroom"]
    return [
        str(row["calls"]),
        s["kind"],
        _pmm(lat["uplink"]),
        _f(ratio.get("uplink_p99")),
        _pmm(lat["downlink"]),
        _f(ratio.get("downlink_p99")),
        clear_text,
        f"{_f(jit['p99_ms'])} / {_f(jit['max_ms'])}",
        f"{_f(lag['p99_ms'])} / {_f(lag['max_ms'])}",
        "-" if s["kind"] == "relay" else _f(head["min_ms"], ".0f") + " ms",
    ]


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    pinned = m.get("pinned")
    workers = result["config"].get("workers", 1)
    server = f"server pinned to CPU {pinned['server']}" if pinned else ""
    if pinned and workers > 1:
        relay = f" (the relay on CPU {pinned['server']})" if result["config"]["baseline"] else ""
        server = f"the bridge's {workers} workers not pinned{relay}"
    where = (
        f"{server}, local agent and callers on CPU {pinned['agent_and_callers']}"
        if pinned
        else "no CPU pinning"
    )
    return (
        f"{m['cpus']} CPUs ({m['cpu_model'] or 'unknown CPU'}), {m['implementation']} "
        f"{m['python']}, {m['platform']}; {where}"
    )


def measured_line(result: dict[str, Any]) -> str:
    """What was measured, and whether the load generator, not the server, was the limit."""
    c, s = result["config"], result.get("summary", {})
    cpus = c.get("load_cpus")
    where = f"CPU {','.join(map(str, cpus))}" if cpus else "unpinned"
    line = (
        f"Measured: the server's own CPU, latency and memory with every call live; the local "
        f"agent and {c.get('load_processes', 1)} load process(es) generate the calls ({where})."
    )
    if c.get("repeat", 1) > 1:
        line += (
            f" Every step ran {c['repeat']} times, the servers taking turns: each figure is "
            "a server's median run (CPU per call-second: median and range of every run), "
            "x relay the median of the ratios of runs made one after the other."
        )
    if c.get("workers", 1) > 1:
        line += (
            f" The bridge runs as {c['workers']} worker processes on one port: its CPU and "
            "memory are summed over them, and its calls per box is the largest clean step."
        )
    at = s.get("load_saturated_at")
    if at is None:
        return line + " The load generator never reached 90% of its cores."
    return line + (
        f" From {at} calls the load generator saturated (agent+callers at >= 90% of its "
        "cores) against at least one server: those steps (*bounded by the load generator*) "
        "say more about the generator than the server, and calls per core beyond them is "
        "extrapolated from CPU per call-second, not measured."
    )


def _quality_rows(q: dict[str, Any]) -> list[list[str]]:
    return [
        [d, _f(q[d]["streamed"]), _f(q[d]["naive"]), _f(q["bar"])] for d in ("uplink", "downlink")
    ]


QUALITY_HEAD = ["direction", "bridge (streamed)", "naive per-chunk", "bar"]


COMPARE_HEAD = [
    "server",
    "calls",
    "CPU ms per call-s",
    "x relay",
    "calls/core",
    "RSS KiB/call",
    "uplink p99",
    "downlink p99",
    "trigger→clear p99",
    "PESQ up/down",
    "PESQ vs PCM up/down",
    "late frames up/down",
    "verdict",
]


def _pair(p: dict[str, Any] | None, spec: str = ".2f") -> str:
    return "-" if not p else f"{_f(p['uplink'], spec)} / {_f(p['downlink'], spec)}"


def _compare_cells(r: dict[str, Any]) -> list[str]:
    late = r["late_frames"]
    return [
        r["server"],
        str(r["calls"]),
        _f(r["cpu_ms_per_call_s"], ".3f"),
        _f(r["x_relay"]),
        _f(r["calls_per_core"], ".0f"),
        _f(r["rss_kib_per_call"], ".0f"),
        _f(r["uplink_p99_ms"]),
        _f(r["downlink_p99_ms"]),
        _f(r["trigger_to_clear_p99_ms"]),
        _pair(r["pesq"]),
        _pair(r["pesq_vs_pcm"]),
        f"{late['uplink']}/{'-' if late['downlink'] is None else late['downlink']}",
        ("clean" if r["clean"] else "NOT clean")
        + (BOUNDED if r["load_saturated"] else "")
        + (f" ({n} model errors since start)" if (n := r["model_errors_since_start"]) else ""),
    ]


def _compare_parts(result: dict[str, Any], table: Any) -> list[str]:
    c = result["compare"]
    servers = "; ".join(f"{k}: {v}" for k, v in c["servers"].items())
    rows = [_compare_cells(r) for r in c["rows"]]
    note = [c["pesq_note"]] if c["pesq_note"] else []
    return [f"Servers compared ({servers})", table(COMPARE_HEAD, rows), *note]


def _target_rows(result: dict[str, Any]) -> list[list[str]]:
    mark = {True: "met", False: "NOT met", None: "not measured"}
    return [[t["target"], t["measured"], mark[t["met"]]] for t in result.get("targets", [])]


def render_text(result: dict[str, Any]) -> str:
    rows = _rows(result)
    c = result["config"]
    parts = [
        "",
        f"Machine: {_machine_line(result)}",
        f"Each step: {c['duration_s']:g} s measured with every call live; callers play "
        f"{c['caller']} looped (talk, listen, interrupt), 20 ms μ-law frames in real time.",
        "",
        measured_line(result),
        "",
        "Load and cost",
        _text_table(COST_HEAD, [_cost_cells(*r) for r in rows]),
        "",
        "Latency added by the server (ms)",
        _text_table(LATENCY_HEAD, [_latency_cells(*r) for r in rows]),
    ]
    if "quality_skipped" in result:
        parts += ["", result["quality_skipped"]]
    if "quality" in result:
        parts += [
            "",
            f"Audio quality, PESQ-NB against ideal offline conversion "
            f"({result['quality']['chunking']})",
            _text_table(QUALITY_HEAD, _quality_rows(result["quality"])),
        ]
    if "compare" in result:
        parts += ["", *_compare_parts(result, _text_table)]
    s = result.get("summary", {})
    parts += [
        "",
        f"Sustained: {s['sustained_calls']} concurrent calls with no late frame; "
        f"~{_f(s.get('calls_per_core_estimate'), '.0f')} calls per core by CPU."
        if s.get("sustained_calls")
        else "Sustained: no step ran with no late frame.",
    ]
    if s.get("first_failing_step"):
        fail = s["first_failing_step"]
        parts.append(f"First step that was not clean: {fail['calls']} calls: {fail['verdict']}")
    parts += ["", "Targets", _text_table(["target", "measured", "verdict"], _target_rows(result))]
    return "\n".join(parts)


def render_markdown(result: dict[str, Any]) -> str:
    rows = _rows(result)
    parts = [
        f"Machine: {_machine_line(result)}.",
        "",
        measured_line(result),
        "",
        _md_table(COST_HEAD, [_cost_cells(*r) for r in rows]),
        "",
        _md_table(LATENCY_HEAD, [_latency_cells(*r) for r in rows]),
        "",
    ]
    if "quality_skipped" in result:
        parts += [result["quality_skipped"], ""]
    if "quality" in result:
        parts += [_md_table(QUALITY_HEAD, _quality_rows(result["quality"])), ""]
    if "compare" in result:
        head, table, *note = _compare_parts(result, _md_table)
        parts += [head + ":", "", table, "", *note, ""]
    parts += [_md_table(["target", "measured", "verdict"], _target_rows(result)), ""]
    return "\n".join(parts)


def jsonable(value: Any) -> Any:
    """NaN and infinity become null, so the file is strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
