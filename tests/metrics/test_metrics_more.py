"""The metrics beside the call figures: truncate errors, late frames, tool-call latency,
each in ``/metrics`` as Prometheus text and counting what happened."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from bridge.agents import Agent
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.metrics import CallFigures, Metrics, MetricsCollector
from bridge.sim.caller import simulate_call
from tests.e2e import PATIENCE_S, rig, run_undisturbed, silence
from tests.test_metrics import check_buckets, hist_count, parse, value


def exposition(metrics: Metrics) -> str:
    registry = CollectorRegistry()
    registry.register(MetricsCollector(metrics))
    return generate_latest(registry).decode()


def test_truncate_errors_are_told_from_other_model_errors() -> None:
    m = Metrics()
    figures = CallFigures(m)
    events = [
        CallEvent(1.0, "model_error", {"code": "item_truncate_invalid_item_id", "message": "x"}),
        CallEvent(
            2.0,
            "model_error",
            {
                "code": "invalid_value",
                "message": "Audio content of 900ms is already shorter "
                "than the requested truncation point",
            },
        ),
        CallEvent(3.0, "model_error", {"code": "rate_limit_exceeded", "message": "slow down"}),
    ]
    figures.observe(events, 0.0, playing=False)
    _, s = parse(exposition(m))
    assert value(s, "bridge_truncate_errors_total") == 2
    assert value(s, "bridge_model_errors_by_code_total", code="rate_limit_exceeded") == 1


def test_tool_calls_are_timed_and_counted_by_outcome() -> None:
    m = Metrics()
    _, s = parse(exposition(m))
    assert hist_count(s, "bridge_tool_call_seconds") == 0
    m.tool_call("lookup_order", "ok", 0.25)
    m.tool_call("lookup_order", "timeout", 5.0)
    types, s = parse(exposition(m))
    assert types["bridge_tool_call_seconds"] == "histogram"
    check_buckets(s, "bridge_tool_call_seconds")
    assert hist_count(s, "bridge_tool_call_seconds") == 2
    assert abs(value(s, "bridge_tool_call_seconds_sum") - 5.25) < 1e-6
    assert value(s, "bridge_tool_calls_total", outcome="ok") == 1
    assert value(s, "bridge_tool_calls_total", outcome="timeout") == 1


def test_agent_audio_released_late_counts_as_late_frames() -> None:
    """A stalled event loop while the agent speaks holds up paced audio: counted."""

    async def main() -> None:
        stalled = asyncio.Event()

        def stall(call: Call, events: list[CallEvent]) -> None:
            if not stalled.is_set() and any(e.kind == "agent_audio_start" for e in events):
                stalled.set()
                # Block the loop (as a CPU hog would) while the greeting is being paced.
                asyncio.get_running_loop().call_later(0.3, time.sleep, 0.25)

        agent = Agent(greeting_guard_ms=0)
        async with (
            rig(Settings(agents=(agent,))) as r,
            httpx.AsyncClient(timeout=PATIENCE_S) as client,
        ):
            _, before = parse((await client.get(r.bridge.base_url + "/metrics")).text)
            assert value(before, "bridge_frames_late_total") == 0
            r.bridge.services.observers.append(stall)
            await simulate_call(
                r.bridge.base_url,
                silence(3.0),
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
            )
            assert stalled.is_set()
            _, after = parse((await client.get(r.bridge.base_url + "/metrics")).text)
        assert value(after, "bridge_frames_late_total") >= 1
        assert value(after, "bridge_truncate_errors_total") == 0

    run_undisturbed(main())
