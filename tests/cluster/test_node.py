"""The Cluster facade's settings: REDIS_URL on, off, and kept out of sight."""

from __future__ import annotations

import pytest

from bridge.cluster import Cluster, ClusterOptions
from bridge.config import Settings
from bridge.errors import ConfigError


def test_no_redis_url_means_no_cluster():
    assert Settings().redis_url is None
    assert Cluster.from_settings(Settings.from_env({}, env_file=None)) is None


def test_redis_url_gives_a_cluster_with_the_settings_caps_and_a_hidden_password():
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://:pw-123@127.0.0.1:6399/2",
            "MAX_CALLS": "7",
            "MAX_CALLS_PER_CALLER": "2",
        },
        env_file=None,
    )
    assert "pw-123" not in repr(settings)
    cluster = Cluster.from_settings(settings)
    assert cluster is not None
    assert (cluster.caps.max_calls, cluster.caps.max_per_caller) == (7, 2)
    assert cluster.link.where == "redis://:***@127.0.0.1:6399/2"
    other = Cluster.from_settings(settings)
    assert other is not None and other.instance_id != cluster.instance_id


def test_bad_redis_url_and_options_are_refused():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "http://127.0.0.1:6379"}, env_file=None)
    with pytest.raises(ValueError, match="renew_s"):
        ClusterOptions(lease_s=2.0, renew_s=2.0)
    with pytest.raises(ValueError, match="breaker_poll_s"):
        ClusterOptions(breaker_poll_s=20.0)
