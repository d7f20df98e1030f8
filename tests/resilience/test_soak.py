"""A smoke test of ``bridge bench --soak``: the mode runs and reports, with a tiny duration."""

from __future__ import annotations

import asyncio

from bridge.bench.soak import parse_args, render, soak


def test_a_tiny_soak_runs_calls_through_model_drops_and_reports_rows():
    samples = asyncio.run(
        soak(minutes=0.01, calls=1, drop_every_s=3.0, sample_every_s=5.0, tail_s=1.0)
    )
    first, last = samples[0], samples[-1]
    assert first.calls_done == 0 and last.calls_done >= 1
    assert last.calls_failed == 0 and last.live == 0
    assert last.reconnects >= 1  # the agent cut the session under the call
    assert last.rss_kib > 0 and last.tasks >= 1 and last.fds > 0
    table = render(samples)
    assert table.count("\n") == len(samples) + 1 and "RSS MiB" in table
    assert parse_args(["--soak", "2", "--calls", "4"]).calls == 4
