"""``GET /metrics.json`` answers strict JSON from the first request; ``/readyz`` says why not."""

import json
from typing import Any

from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.config import Settings
from bridge.metrics import Histogram, Metrics
from bridge.server import services_of


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_of_a_fresh_server_are_valid_json() -> None:
    client = TestClient(create_app(Settings()))  # no lifespan: no call, no local agent
    response = client.get("/metrics.json")
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


def test_readyz_says_when_and_why_not_to_send_calls() -> None:
    app = create_app(Settings(max_calls=1))
    client = TestClient(app)
    services = services_of(app)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "reason": None, "calls": 0}

    services.model_unreachable = True  # what a circuit breaker will set
    assert client.get("/readyz").json()["reason"] == "model unreachable"
    services.model_unreachable = False

    services.calls.add(object())  # type: ignore[arg-type]  # one live call: at capacity
    full = client.get("/readyz")
    assert full.status_code == 503 and full.json()["reason"] == "at capacity"
    services.calls.clear()

    services.draining = True
    draining = client.get("/readyz")
    assert draining.status_code == 503 and draining.json()["reason"] == "draining"
    # Liveness is another question: the process is alive, and says it is draining.
    assert client.get("/healthz").json()["status"] == "draining"
