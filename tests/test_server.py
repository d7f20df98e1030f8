"""What ``bridge serve`` and its workers do to their process before taking calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_SETTLE = """
import gc, json
import numpy
from threadpoolctl import threadpool_info
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
from bridge.server import settle_process
settle_process()
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after, "threshold": gc.get_threshold()[0],
                  "frozen": gc.get_freeze_count()}))
"""


def python_prints(code: str, **env: str) -> Any:
    """Run ``code`` in a fresh Python (this checkout, ``env`` added): the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_a_serving_process_does_its_math_on_one_thread() -> None:
    """numpy's BLAS would split the resampler's products over a thread per core (asked for
    four here, whatever this machine has); a serving process keeps them on its own thread,
    and keeps start-up's objects out of the collector's way."""
    figures = python_prints(_SETTLE, OPENBLAS_NUM_THREADS="4", OMP_NUM_THREADS="4")
    assert figures["before"] and max(figures["before"]) > 1, figures  # the test can fail
    assert figures["after"] == [1] * len(figures["after"]), figures
    assert figures["threshold"] == 10_000 and figures["frozen"] > 0, figures
