"""``GET /metrics``: Prometheus text, parsed with ``prometheus_client``'s own parser, on a
fresh server and after a simulated call with barge-ins, checked metric by metric."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bridge.agents import Agent
from bridge.app import create_app
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.leg import INTERNAL_ERROR, Ending
from bridge.metrics import MODEL_ERROR_CODES, Histogram, Metrics
from bridge.phone.protocol import HANGUP_REASON as PHONE_HANGUP
from bridge.services import _outcome
from bridge.sim.caller import simulate_call
from bridge.sim.errors import WebhookRejected
from bridge.softphone.protocol import HANGUP_REASON as SOFTPHONE_HANGUP
from tests.e2e import PATIENCE_S, fixture, rig, run_undisturbed, silence, until
from tests.test_e2e_call import barge_in_caller

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

HISTOGRAMS = (
    "bridge_call_duration_seconds",
    "bridge_uplink_seconds",
    "bridge_downlink_seconds",
    "bridge_barge_in_clear_seconds",
    "bridge_response_latency_seconds",
    "bridge_event_loop_lag_seconds",
)
COUNTERS = (
    "bridge_calls_started",
    "bridge_calls_ended",
    "bridge_model_reconnects",
    "bridge_barge_ins",
    "bridge_model_errors",
    "bridge_model_errors_by_code",
    "bridge_frames_in",
    "bridge_frames_out",
    "bridge_frames_dropped",
)


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family name → type, and every sample by (name, sorted labels)."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def hist_count(samples: Samples, name: str) -> float:
    return value(samples, f"{name}_count")


def check_buckets(samples: Samples, name: str) -> None:
    """Cumulative buckets, ending at +Inf with the count."""
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == name + "_bucket"
    )
    assert buckets, name
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), name
    assert buckets[-1] == (float("inf"), hist_count(samples, name))


def test_metrics_of_a_fresh_app_parse_and_read_zero() -> None:
    client = TestClient(create_app(Settings()))  # no lifespan: no call, no records
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    types, samples = parse(response.text)
    for name in HISTOGRAMS:
        assert types[name] == "histogram", name
        assert hist_count(samples, name) == 0
        check_buckets(samples, name)
    for name in COUNTERS:
        assert types[name] == "counter", name
    assert types["bridge_calls_active"] == "gauge"
    assert value(samples, "bridge_calls_active", leg="phone") == 0
    assert value(samples, "bridge_calls_active", leg="softphone") == 0
    assert value(samples, "bridge_calls_started_total") == 0
    for outcome in ("completed", "caller_hung_up", "failed", "rejected_busy", "transferred"):
        assert value(samples, "bridge_calls_ended_total", outcome=outcome) == 0
    for trigger in ("model", "local", "client"):
        assert value(samples, "bridge_barge_ins_total", trigger=trigger) == 0
    assert "process_cpu_seconds" in types
    assert "bridge_records_written" not in types  # records are off


def test_label_values_are_bounded() -> None:
    m = Metrics()
    for i in range(100):
        m.model_error(f"code_{i}")
        m.barge_in(f"trigger_{i}")
    m.model_error("session_expired")
    m.model_error(None)
    assert m.model_error_codes == {"other": 101, "session_expired": 1}
    assert set(m.barge_ins) == {"model", "local", "client", "other"}
    assert "session_expired" in MODEL_ERROR_CODES


def test_outcomes_follow_the_ending() -> None:
    assert _outcome(Ending(PHONE_HANGUP)) == "caller_hung_up"
    assert _outcome(Ending(SOFTPHONE_HANGUP)) == "caller_hung_up"
    assert _outcome(Ending("browser disconnected (transport close)")) == "caller_hung_up"
    assert _outcome(Ending("twilio closed the stream")) == "completed"
    assert _outcome(Ending("model session closed: x", INTERNAL_ERROR)) == "failed"


def test_histogram_buckets_are_exact_at_the_bin_edges() -> None:
    h = Histogram()
    for ms in (0.05, 1.0, 1.0001, 3.0, 250.0):
        h.add(ms)
    buckets = dict(h.buckets(range(-80, 201, 10), 1e-3))
    assert buckets["0.001"] == 2  # 0.05 ms and exactly 1 ms
    assert buckets["0.00177828"] == 3
    assert buckets["0.00316228"] == 4
    assert buckets["0.316228"] == 5
    assert buckets["+Inf"] == 5


def test_metrics_count_a_simulated_call_with_barge_ins(tmp_path: Path) -> None:
    async def main() -> None:
        agent = Agent(barge_in_min_ms=400, greeting_guard_ms=0)
        settings = Settings(agents=(agent,), records_path=str(tmp_path / "records.db"))
        seen: list[CallEvent] = []

        def observe(call: Call, events: list[CallEvent]) -> None:
            seen.extend(events)

        async with rig(settings) as r, httpx.AsyncClient(timeout=PATIENCE_S) as client:
            services = r.bridge.services
            services.observers.append(observe)
            fresh = await client.get(r.bridge.base_url + "/metrics")
            _, before = parse(fresh.text)
            assert value(before, "bridge_records_written_total") == 0

            audio = barge_in_caller(random.Random(7), 2)
            tail_s = 0.5
            result = await simulate_call(
                r.bridge.base_url,
                audio,
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=tail_s,
            )
            assert result.violations == [] and result.closed_by == "caller"
            m = services.metrics
            await until(lambda: sum(m.ended_by_outcome.values()) == 1, "the call's end")
            writer = services.records
            assert writer is not None
            await until(lambda: writer.stats.written == 1, "the record written")
            response = await client.get(r.bridge.base_url + "/metrics")
            assert response.status_code == 200
            types, s = parse(response.text)

        triggers = Counter(e.detail["trigger"] for e in seen if e.kind == "barge_in")
        assert sum(triggers.values()) >= 1, "the caller talked over the agent"
        stops = sum(e.kind == "speech_stopped" for e in seen)
        frames = round((len(audio) / 8000 + tail_s) / 0.02)

        assert value(s, "bridge_calls_started_total") == 1
        assert value(s, "bridge_calls_active", leg="phone") == 0
        assert value(s, "bridge_calls_ended_total", outcome="caller_hung_up") == 1
        for outcome in ("completed", "failed", "rejected_busy", "transferred"):
            assert value(s, "bridge_calls_ended_total", outcome=outcome) == 0
        assert hist_count(s, "bridge_call_duration_seconds") == 1
        duration = value(s, "bridge_call_duration_seconds_sum")
        assert len(audio) / 8000 <= duration < len(audio) / 8000 + PATIENCE_S
        assert value(s, "bridge_model_reconnects_total") == 0
        for trigger in ("model", "local", "client"):
            assert value(s, "bridge_barge_ins_total", trigger=trigger) == triggers[trigger]
        assert value(s, "bridge_model_errors_total") == 0
        assert not [k for k in s if k[0] == "bridge_model_errors_by_code_total"]
        assert value(s, "bridge_frames_in_total") == frames
        assert value(s, "bridge_frames_out_total") == m.frames_out > 0
        assert value(s, "bridge_frames_dropped_total") == 0
        assert hist_count(s, "bridge_uplink_seconds") == frames
        assert hist_count(s, "bridge_downlink_seconds") == m.downlink.n > 0
        # Every barge-in sends one clear, timed from its trigger.
        assert hist_count(s, "bridge_barge_in_clear_seconds") == sum(triggers.values())
        assert len(result.clears) == sum(triggers.values())
        answered = hist_count(s, "bridge_response_latency_seconds")
        assert 1 <= answered <= stops
        latency_s = value(s, "bridge_response_latency_seconds_sum") / answered
        assert 0 < latency_s < PATIENCE_S
        assert hist_count(s, "bridge_event_loop_lag_seconds") >= 1
        for name in HISTOGRAMS:
            check_buckets(s, name)
        assert value(s, "bridge_records_written_total") == 1
        assert value(s, "bridge_records_lost_total", reason="dropped") == 0
        assert value(s, "bridge_records_lost_total", reason="failed") == 0
        assert types["bridge_records_queued"] == "gauge"
        # No label carries a call sid or a number.
        labels = {v for (_, ls) in s for _, v in ls}
        assert not any(result.call_sid in v or "555" in v for v in labels)

    run_undisturbed(main())


def test_a_busy_rejection_is_counted() -> None:
    async def main() -> None:
        async with rig(Settings(max_calls=1)) as r, httpx.AsyncClient(timeout=PATIENCE_S) as c:
            first = asyncio.create_task(
                simulate_call(
                    r.bridge.base_url,
                    fixture("caller-hello.wav")[: 8000 * 2],
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    tail_s=5.0,
                )
            )
            await until(lambda: r.bridge.services.at_capacity, "the first call live")
            with pytest.raises(WebhookRejected, match="no <Connect><Stream>"):
                await simulate_call(
                    r.bridge.base_url,
                    silence(0.5),
                    public_url=r.bridge.public_url,
                    auth_token=r.bridge.auth_token,
                    tail_s=0.0,
                )
            ready = await c.get(r.bridge.base_url + "/readyz")
            assert ready.status_code == 503 and ready.json()["reason"] == "at capacity"
            _, s = parse((await c.get(r.bridge.base_url + "/metrics")).text)
            assert value(s, "bridge_calls_ended_total", outcome="rejected_busy") == 1
            assert value(s, "bridge_calls_active", leg="phone") == 1
            await first

    run_undisturbed(main())
