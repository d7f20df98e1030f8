"""Test-wide settings.

Hypothesis budgets (the ``*_fuzz`` modules): the ``default`` profile is short and
deterministic so the normal test command stays fast and never fails on timing or on
luck; ``long`` explores far more, with new random examples each run and the example
database in ``.hypothesis/`` so a failure found once is replayed first next time::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -k fuzz
    .venv/bin/python -m pytest -k fuzz --fuzz=long
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    stateful_step_count=25,
    deadline=None,  # a loaded 2-core CI box must not fail on timing
    derandomize=True,  # the same examples every run: CI is stable, failures reproduce
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=1000,
    stateful_step_count=60,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz",
        choices=("default", "long"),
        default=None,
        help="Hypothesis budget for the fuzz tests (default: $HYPOTHESIS_PROFILE or 'default')",
    )


def pytest_configure(config: pytest.Config) -> None:
    profile = config.getoption("--fuzz")
    if profile:
        settings.load_profile(profile)
