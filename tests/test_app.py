"""``GET /metrics`` answers strict JSON from the first request, before any call."""

import json
from typing import Any

from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.config import Settings
from bridge.metrics import Histogram, Metrics


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_of_a_fresh_server_are_valid_json() -> None:
    client = TestClient(create_app(Settings()))  # no lifespan: no call, no local agent
    response = client.get("/metrics")
    assert response.status_code == 200
    body = _strict(response.text)
    for name in ("uplink", "downlink", "clear"):
        assert body[name] == {
            "n": 0,
            "p50_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "mean_ms": None,
        }
    assert body["calls_started"] == 0


def test_an_empty_histogram_summarises_to_none_then_to_figures() -> None:
    h = Histogram()
    assert json.dumps(Metrics().snapshot(), allow_nan=False)
    assert h.summary()["p99_ms"] is None
    h.add(2.0)
    summary = h.summary()
    assert summary["n"] == 1 and summary["max_ms"] == summary["mean_ms"] == 2.0
    assert summary["p50_ms"] is not None and 0 < summary["p50_ms"] <= 2.0
