"""The reconnect policy, pure: jittered backoff inside a budget; what is not retried."""

from __future__ import annotations

import random

import pytest

from bridge.ai.reconnect import Retry, RetryConfig, retryable_status
from bridge.config import Settings


@pytest.mark.parametrize("seed", range(50))
def test_at_most_three_attempts_within_four_seconds(seed: int):
    rng = random.Random(seed)
    retry = Retry(RetryConfig(), now=100.0, rng=rng)
    now, starts = 100.0, [100.0]
    while True:
        now += rng.uniform(0.0, 1.5)  # the failed attempt took this long
        delay = retry.next_delay(now, 429)
        if delay is None:
            break
        assert delay >= 0
        now += delay
        starts.append(now)
    assert len(starts) <= 3
    assert all(start - 100.0 <= 4.0 for start in starts)


def test_the_backoff_grows_and_is_jittered():
    delays = []
    for seed in range(20):
        retry = Retry(RetryConfig(attempts=5, budget_s=100.0), now=0.0, rng=random.Random(seed))
        delays.append((retry.next_delay(0.0, 503), retry.next_delay(0.0, 503)))
    firsts = {d[0] for d in delays}
    assert len(firsts) > 10  # jittered: calls that failed together do not retry together
    assert all(a is not None and b is not None for a, b in delays)
    mean_first = sum(a for a, _ in delays if a is not None) / len(delays)
    mean_second = sum(b for _, b in delays if b is not None) / len(delays)
    assert mean_second > 1.5 * mean_first


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_not_retried(status: int):
    assert not retryable_status(status)
    assert Retry(RetryConfig(), now=0.0).next_delay(0.0, status) is None


@pytest.mark.parametrize("status", [None, 429, 500, 502, 503])
def test_rate_limits_server_errors_and_no_answer_are_retried(status: int | None):
    assert retryable_status(status)
    assert Retry(RetryConfig(), now=0.0).next_delay(0.1, status) is not None


def test_nothing_starts_after_the_budget():
    retry = Retry(RetryConfig(attempts=10, budget_s=4.0), now=0.0)
    assert retry.next_delay(4.5, None) is None


def test_config_from_settings():
    settings = Settings(
        model_reconnect_attempts=5,
        model_retry_budget_s=9.0,
        model_recycle_after_s=600.0,
        replay_max_items=7,
    )
    assert RetryConfig.from_settings(settings) == RetryConfig(5, 9.0, 600.0, 7)


def test_settings_from_the_environment():
    env = {
        "MODEL_RECONNECT_ATTEMPTS": "4",
        "MODEL_RETRY_BUDGET_S": "6",
        "MODEL_RECYCLE_AFTER_S": "1800",
        "REPLAY_MAX_ITEMS": "10",
    }
    s = Settings.from_env(env, env_file=None)
    assert RetryConfig.from_settings(s) == RetryConfig(4, 6.0, 1800.0, 10)
    d = Settings.from_env({}, env_file=None)
    assert RetryConfig.from_settings(d) == RetryConfig(3, 4.0, 3300.0, 20)
