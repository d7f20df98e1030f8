"""``bridge simulate``: one whole phone call on this machine, told as a timeline.

Starts the real server in-process (with a fresh Twilio auth token, so signatures and stream
tokens are checked exactly as in production), lets the simulator call it the way Twilio
would, writes what the caller heard to a WAV file and prints the timeline from both sides
with the barge-in figures: how long from trigger to ``clear`` leaving, and how far the
truncation point was from what the caller really heard.

``expire_after_s`` (``bridge simulate --expire-after N``) runs the local agent with its
session expiry fault: every session ends after N seconds (``session_expired``, close 1001,
as the real service does at 60 minutes), so the timeline shows the bridge replacing the
session mid-call and replaying the conversation, with the caller none the wiser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from bridge.audio.wav import read_wav, write_wav
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.harness import running_bridge, signed_settings
from bridge.sim.caller import new_sid, simulate_call
from bridge.sim.result import CallResult

logger = logging.getLogger(__name__)

# Bridge events worth a line in the demo (transcript deltas are too chatty).
SHOWN = {
    "model_connected",
    "model_lost",
    "model_reconnected",
    "speech_started",
    "speech_stopped",
    "barge_in",
    "barge_in_confirmed",
    "barge_in_unconfirmed",
    "response_done",
    "transcript",
    "model_error",
    "dtmf",
    "dtmf_input",
    "tool_started",
    "tool_call",
    "tool_filler",
    "transfer",
    "transferred",
    "silence",
    "ending",
    "hangup",
    "closed",
}
# Details for records and observers, too long for a timeline line.
HIDDEN = {"text", "usage", "item_ms"}


async def run_demo(
    settings: Settings,
    caller_wav: Path,
    out: Path,
    *,
    tail_s: float,
    expire_after_s: float | None = None,
    dtmf: list[tuple[float, str]] | None = None,
    silent_s: float | None = None,
    tool_server: bool = False,
    tool_delay_s: float = 0.0,
    twilio_stand_in: bool = False,
) -> int:
    """``dtmf``: keypad presses to send; ``silent_s``: the caller says nothing for that long
    (instead of the WAV); ``tool_server``: serve a demo endpoint for the agents' tools;
    ``twilio_stand_in``: Twilio REST calls (``transfer_call``) go to a local stand-in
    (``bridge.sim.twilio_cloud``), which ends the simulated stream when it redirects it."""
    if expire_after_s is not None and not settings.uses_local_agent:
        print("--expire-after needs the local agent: unset OPENAI_API_KEY")
        return 2
    settings = signed_settings(settings, public_url=None)
    audio, rate = read_wav(caller_wav)
    if silent_s is not None:
        audio, rate, tail_s = audio[:0], 8000, silent_s
    if rate != 8000:
        from bridge.audio.resample import resample_offline

        audio = resample_offline(audio, rate, 8000)
    bridge_events: list[CallEvent] = []

    def observe(call: Call, events: list[CallEvent]) -> None:
        bridge_events.extend(events)

    async with contextlib.AsyncExitStack() as stack:
        model_url = None
        agent = "local echo agent" if settings.uses_local_agent else settings.openai_realtime_model
        if expire_after_s is not None:
            from bridge.local_agent import Faults, serve_local_agent

            local = await serve_local_agent(faults=Faults(expire_after_s=expire_after_s))
            await stack.enter_async_context(local)
            model_url = local.url
            agent += f", sessions expire after {expire_after_s:g} s"
        if tool_server:
            from bridge.tools.demo_endpoint import serve_demo_tools

            urls = await stack.enter_async_context(serve_demo_tools(settings, tool_delay_s))
            print(f"Demo tool endpoint: {', '.join(urls) or 'no tools declared'}")
        call_sid, cloud, redirected = new_sid("CA"), None, None
        if twilio_stand_in:
            from bridge.sim.twilio_cloud import TwilioCloud

            cloud = stack.enter_context(TwilioCloud(auth_token=settings.twilio_auth_token or ""))
            settings = settings.with_(
                twilio_account_sid=cloud.account_sid, twilio_api_base_url=cloud.url
            )
            cloud.add_call(call_sid)
            loop, redirected = asyncio.get_running_loop(), asyncio.Event()
            cloud.on_redirect(call_sid, lambda: loop.call_soon_threadsafe(redirected.set))
            print(f"Twilio REST stand-in: {cloud.url}")
        bridge = await stack.enter_async_context(running_bridge(settings, model_url=model_url))
        bridge.services.observers.append(observe)
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
            dtmf=dtmf,
            call_sid=call_sid,
            redirected=redirected,
        )
        clear_ms = bridge.services.metrics.clear.summary()
        reconnects = bridge.services.metrics.model_reconnects

    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, result.heard, 8000)
    print(render(result, bridge_events, clear_ms))
    print(f"What the caller heard: {out} ({len(result.heard) / 8000:.1f} s)")
    if reconnects:
        print(f"Model sessions replaced mid-call: {reconnects}")
    print(bridge.services.records_summary())
    for request in cloud.requests if cloud is not None else []:
        print(f"Twilio stand-in got {request.method} {request.path} → {request.status}")
        for key, value in request.form.items():
            print(f"  {key} = {value}")
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
