"""``bridge simulate``: one whole phone call on this machine, told as a timeline.

Starts the real server in-process (with a fresh Twilio auth token, so signatures and stream
tokens are checked exactly as in production), lets the simulator call it the way Twilio
would, writes what the caller heard to a WAV file and prints the timeline from both sides
with the barge-in figures: how long from trigger to ``clear`` leaving, and how far the
truncation point was from what the caller really heard.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bridge.audio.wav import read_wav, write_wav
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.harness import running_bridge, signed_settings
from bridge.sim.caller import simulate_call
from bridge.sim.result import CallResult

logger = logging.getLogger(__name__)

# Bridge events worth a line in the demo (transcript deltas are too chatty).
SHOWN = {
    "model_connected",
    "speech_started",
    "speech_stopped",
    "barge_in",
    "barge_in_confirmed",
    "barge_in_unconfirmed",
    "response_done",
    "transcript",
    "model_error",
    "dtmf",
    "closed",
}
# Details for records and observers, too long for a timeline line.
HIDDEN = {"text", "usage", "item_ms"}


async def run_demo(settings: Settings, caller_wav: Path, out: Path, *, tail_s: float) -> int:
    settings = signed_settings(settings, public_url=None)
    audio, rate = read_wav(caller_wav)
    if rate != 8000:
        from bridge.audio.resample import resample_offline

        audio = resample_offline(audio, rate, 8000)
    bridge_events: list[CallEvent] = []

    def observe(call: Call, events: list[CallEvent]) -> None:
        bridge_events.extend(events)

    async with running_bridge(settings) as bridge:
        bridge.services.observers.append(observe)
        agent = "local echo agent" if settings.uses_local_agent else settings.openai_realtime_model
        print(
            f"Calling the bridge at {bridge.base_url} ({agent}) with {caller_wav} "
            f"({len(audio) / 8000:.1f} s)…",
            flush=True,
        )
        result = await simulate_call(
            bridge.base_url,
            audio,
            public_url=bridge.public_url,
            auth_token=bridge.auth_token,
            tail_s=tail_s,
        )
        clear_ms = bridge.services.metrics.clear.summary()

    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, result.heard, 8000)
    print(render(result, bridge_events, clear_ms))
    print(f"What the caller heard: {out} ({len(result.heard) / 8000:.1f} s)")
    if result.violations:
        print("Protocol violations Twilio would reject:", *result.violations, sep="\n  ")
        return 1
    return 0


def render(
    result: CallResult, bridge_events: list[CallEvent], clear_ms: dict[str, float | None]
) -> str:
    rows: list[tuple[float, str, str]] = []
    for e in result.timeline:
        if e.kind != "mark_echo":
            rows.append((e.t, f"caller  {e.kind}", e.detail))
    for b in bridge_events:
        if b.kind in SHOWN:
            detail = ", ".join(f"{k}={v}" for k, v in b.detail.items() if k not in HIDDEN)
            if b.kind == "transcript":
                detail = f"{b.detail.get('role')}: {b.detail.get('text', '')!r}"
            rows.append((b.t, f"bridge  {b.kind}", detail))
    lines = ["", "Timeline (s)"]
    rows.sort(key=lambda row: row[0])  # stable: same-time events keep their order
    lines += [f"{t:7.2f}  {what:<28} {detail}" for t, what, detail in rows]

    truncates = [b for b in bridge_events if b.kind == "barge_in"]
    if result.clears:
        lines += ["", "Barge-ins"]
        for clear, barge in zip(result.clears, truncates, strict=False):
            end = barge.detail.get("audio_end_ms")
            truth = clear.played_ms
            if end is None:
                lines.append(
                    f"  at {clear.t:.2f} s ({barge.detail.get('trigger')}): "
                    f"caller had heard {truth:.0f} ms of the item; no truncate needed"
                )
            else:
                lines.append(
                    f"  at {clear.t:.2f} s ({barge.detail.get('trigger')}): truncated at "
                    f"{end} ms, caller heard {truth:.0f} ms (off by {end - truth:+.0f} ms)"
                )
        if clear_ms["n"]:  # None figures when no clear followed a trigger
            lines.append(
                f"  trigger → clear sent: p50 {clear_ms['p50_ms']:.3f} ms, "
                f"max {clear_ms['max_ms']:.3f} ms over {clear_ms['n']} barge-ins"
            )
    lines.append(f"\nCall ended: {result.closed_by} closed it (code {result.close_code})")
    return "\n".join(lines)
