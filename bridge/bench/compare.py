"""``bridge bench --compare``: four servers at the same steps, in one table. Pure.

The servers: the bridge transcoding (today's default: μ-law 8 kHz <-> PCM16 24 kHz), the
same bridge started with ``MODEL_AUDIO_FORMAT=pcmu`` (the model speaks μ-law, so the
bridge passes payloads through; a bridge that does not know the variable yet ignores it
and transcodes), with ``MODEL_AUDIO_FORMAT=pcmu-in`` (μ-law passes through toward the
model only; its PCM16 is transcoded for the caller), and the minimal relay
(``bridge.bench.relay``). ``bridge.bench.main`` starts them (``EXTRA_SERVERS``) and runs
every step against each; this module turns the steps' figures into the comparison rows
(``build``), which ``bridge.bench.report`` prints.

PESQ per server: transcoding, the streamed figures of ``bridge.bench.quality`` (against
the ideal conversion of the μ-law signal, so μ-law's own loss is not counted); pass-
through, a μ-law round trip at 8 kHz against PCM (the bridge adds nothing to μ-law, so
that is all the caller and the model lose); μ-law in, each direction as the server that
handles it the same way (the uplink of the pass-through, the downlink of transcoding).
Every server against PCM is in ``pesq_vs_pcm``: the figures to compare one with another.
The relay's audio is noise by design: no PESQ.

Nothing here starts processes or touches the bridge.
"""

from __future__ import annotations

from typing import Any

TRANSCODING = "bridge"
PASSTHROUGH = "bridge-pcmu"
MULAW_IN = "bridge-pcmu-in"
RELAY = "relay"
SERVERS = (TRANSCODING, PASSTHROUGH, MULAW_IN, RELAY)
# (label, server kind for ``bridge.bench.server``, extra environment), started after the
# transcoding bridge and before the relay.
EXTRA_SERVERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (PASSTHROUGH, "bridge", {"MODEL_AUDIO_FORMAT": "pcmu"}),
    (MULAW_IN, "bridge", {"MODEL_AUDIO_FORMAT": "pcmu-in"}),
)
DESCRIPTIONS = {
    TRANSCODING: "bridge, transcoding μ-law 8 kHz <-> PCM16 24 kHz (default)",
    PASSTHROUGH: "bridge, μ-law pass-through (MODEL_AUDIO_FORMAT=pcmu)",
    MULAW_IN: "bridge, μ-law to the model, its PCM16 transcoded (MODEL_AUDIO_FORMAT=pcmu-in)",
    RELAY: "minimal relay (cost baseline, no call logic)",
}
PESQ_NOTE = (
    "PESQ: bridge = streamed transcoding against the ideal conversion of the μ-law signal "
    "(μ-law's own loss not counted); bridge-pcmu = a μ-law round trip against PCM (all the "
    "pass-through loses); bridge-pcmu-in = the pass-through's uplink and the transcoding "
    "downlink. Against PCM, all three: see 'PESQ vs PCM'."
)
# How each server handles the uplink and the downlink: converted as the default bridge
# does ("transcoding") or μ-law passed through ("passthrough").
_HANDLING = {
    TRANSCODING: {"uplink": "transcoding", "downlink": "transcoding"},
    PASSTHROUGH: {"uplink": "passthrough", "downlink": "passthrough"},
    MULAW_IN: {"uplink": "passthrough", "downlink": "transcoding"},
}


def _p99(summary: dict[str, Any]) -> float | None:
    value = summary.get("p99_ms") if summary.get("n") else None
    return None if value is None else float(value)


def _pesq(server: str, quality: dict[str, Any] | None) -> dict[str, float] | None:
    if not quality or server not in _HANDLING:
        return None
    handling = _HANDLING[server]
    pcm: dict[str, Any] = quality.get("against_pcm") or {}
    if not pcm and "passthrough" in handling.values():
        return None
    return {
        d: quality[d]["streamed"] if how == "transcoding" else pcm["passthrough"][d]
        for d, how in handling.items()
    }


def _pesq_vs_pcm(server: str, quality: dict[str, Any] | None) -> dict[str, float] | None:
    pcm = (quality or {}).get("against_pcm")
    if not pcm or server not in _HANDLING:
        return None
    return {d: pcm[how][d] for d, how in _HANDLING[server].items()}


def row(
    server: str, step: dict[str, Any], x_relay: float | None, quality: dict[str, Any] | None
) -> dict[str, Any]:
    """One server at one step, from its ``figures.step`` figures and its CPU over the
    relay's (``figures.add_ratios``)."""
    frames = step["frames"]
    return {
        "server": server,
        "calls": step["calls"],
        "cpu_ms_per_call_s": step["cpu"]["ms_per_call_s"],
        "x_relay": x_relay if x_relay == x_relay else None,  # NaN: no relay to divide by
        "calls_per_core": step["cpu"]["calls_per_core"],
        "rss_kib_per_call": step["memory"]["per_call_kib"],
        "uplink_p99_ms": _p99(step["latency_ms"]["uplink"]),
        "downlink_p99_ms": _p99(step["latency_ms"]["downlink"]),
        "trigger_to_clear_p99_ms": _p99(step["barge_in"]["trigger_to_clear_ms"]),
        "pesq": _pesq(server, quality),
        "pesq_vs_pcm": _pesq_vs_pcm(server, quality),
        "late_frames": {
            "uplink": frames["uplink_late"],
            # The relay keeps no items apart, so a gap inside an utterance means nothing.
            "downlink": None if server == RELAY else frames["downlink_late_frames"],
        },
        "load_saturated": bool(step.get("load_saturated")),
        "model_errors_since_start": int(step.get("model_errors_since_start", 0)),
        "clean": step["clean"],
        "verdict": step["verdict"],
    }


def build(result: dict[str, Any]) -> dict[str, Any]:
    """The ``compare`` section of the result: every server at every step that ran."""
    quality = result.get("quality")
    rows = []
    for step_row in result.get("steps", []):
        x_relay = step_row.get("cpu_x_relay", {})
        for server in SERVERS:
            if server in step_row:
                rows.append(row(server, step_row[server], x_relay.get(server), quality))
    return {
        "servers": {s: DESCRIPTIONS[s] for s in SERVERS},
        "rows": rows,
        "pesq_note": PESQ_NOTE if quality else None,  # else the one skipped line says why
    }
