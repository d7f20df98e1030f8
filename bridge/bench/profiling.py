"""A cProfile run of the server, boiled down to what a reader can act on. Pure.

Three views of the same ``pstats`` data: the functions that spend the most time in their
own code (tottime), the bridge's own functions by cumulative time (what each step of a
call costs, callees included), and own time summed per area of the stack (bridge audio,
call logic, websockets, uvicorn, asyncio, json, ...), so "where the CPU goes" is one table.
"""

from __future__ import annotations

import cProfile
import pstats
from typing import Any

# (area, substrings of the file path or function name), first match wins.
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("bridge.audio (transcoding)", ("bridge/audio/",)),
    ("bridge.phone (Twilio protocol, playout)", ("bridge/phone/",)),
    ("bridge.call + barge_in (coordinator)", ("bridge/call.py", "bridge/barge_in.py")),
    ("bridge.runner (per-call I/O shell)", ("bridge/runner.py",)),
    ("bridge.ai (Realtime events)", ("bridge/ai/",)),
    ("bridge.bench (probe)", ("bridge/bench/",)),
    ("bridge (other)", ("bridge/", "twiml/")),
    ("uvicorn", ("uvicorn/",)),
    ("starlette", ("starlette/",)),
    ("websockets", ("websockets/",)),
    ("asyncio + selectors", ("asyncio/", "selectors.py", "<method 'poll'", "<method 'control'")),
    ("json", ("json/", "_json", "'dumps'", "'loads'")),
    ("base64 / binascii", ("base64", "binascii", "b2a_base64", "a2b_base64")),
    (
        "numpy",
        ("numpy/", "numpy.", "<method 'astype'", "<method 'tobytes'", "<built-in method numpy"),
    ),
    ("socket sends/receives", ("<method 'send'", "<method 'recv'", "sendmsg", "<method 'write'")),
]


def area_of(filename: str, func: str) -> str:
    where = f"{filename}:{func}".replace("\\", "/")
    for area, needles in AREAS:
        if any(n in where for n in needles):
            return area
    return "other (python builtins, logging, ...)"


def _name(filename: str, line: int, func: str) -> str:
    path = filename.replace("\\", "/")
    for anchor in ("/site-packages/", "/lib/python3", "/work/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    if path.startswith("~") or not path:
        return func
    for root in ("bridge/", "twiml/"):
        if root in path:
            path = path[path.index(root) :]
    return f"{path}:{line}({func})"


def summarise(profile: cProfile.Profile | pstats.Stats, *, top: int = 15) -> dict[str, Any]:
    """Own time by area, top functions by own time, top bridge functions by cumulative time."""
    stats = profile if isinstance(profile, pstats.Stats) else pstats.Stats(profile)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values()) or 1e-12
    areas: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for (filename, line, func), (_cc, ncalls, tt, ct, _callers) in raw.items():
        area = area_of(filename, func)
        areas[area] = areas.get(area, 0.0) + tt
        rows.append(
            {
                "function": _name(filename, line, func),
                "area": area,
                "ncalls": ncalls,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
            }
        )
    by_own = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    own_code = [r for r in rows if r["area"].startswith("bridge") and "bench" not in r["area"]]
    by_cum = sorted(own_code, key=lambda r: -r["cumtime_s"])[:top]
    return {
        "profiled_cpu_s": round(total, 3),
        "by_area": [
            {"area": a, "tottime_s": round(t, 3), "share": round(t / total, 3)}
            for a, t in sorted(areas.items(), key=lambda kv: -kv[1])
        ],
        "top_tottime": by_own,
        "top_bridge_cumtime": by_cum,
    }


def render(summary: dict[str, Any], *, top: int = 12) -> str:
    lines = [
        f"profiled CPU: {summary['profiled_cpu_s']:.2f} s (cProfile adds its own overhead)",
        "",
        "own time by area:",
    ]
    lines += [
        f"  {a['share'] * 100:5.1f}%  {a['tottime_s']:7.2f} s  {a['area']}"
        for a in summary["by_area"]
        if a["share"] >= 0.005
    ]
    lines += [
        "",
        "top functions by own time (tottime):",
        f"  {'tottime s':>9} {'cumtime s':>9} {'calls':>9}  function",
    ]
    lines += [
        f"  {r['tottime_s']:9.3f} {r['cumtime_s']:9.3f} {r['ncalls']:9d}  {r['function']}"
        for r in summary["top_tottime"][:top]
    ]
    lines += [
        "",
        "bridge functions by cumulative time (callees included):",
        f"  {'cumtime s':>9} {'tottime s':>9} {'calls':>9}  function",
    ]
    lines += [
        f"  {r['cumtime_s']:9.3f} {r['tottime_s']:9.3f} {r['ncalls']:9d}  {r['function']}"
        for r in summary["top_bridge_cumtime"][:top]
    ]
    return "\n".join(lines)
