"""The far-end schedule (bridge.schedule) when echoes come back late but playback did not."""

from __future__ import annotations

from bridge.schedule import PlayoutItem, Schedule

BYTES_PER_MS = 8.0  # μ-law 8 kHz
CHUNK_MS, LEAD_MS = 40, 160


def test_one_held_up_echo_does_not_leave_heard_short_for_the_rest_of_the_item() -> None:
    """The far end plays exactly on time and echoes 1 ms after each chunk ends, except a
    burst of echoes held up 80 ms on the way back. What the caller heard must stay within
    a couple of ms of the truth afterwards, not drift 20-40 ms short."""
    schedule = Schedule(BYTES_PER_MS)
    item = PlayoutItem("item_A", 0, model_ms=10_000)
    out: list[tuple[str, int]] = []  # (mark name, chunk index) not echoed yet
    released, t = 0, 0.0
    errors: list[float] = []
    while t < 3.0:
        while schedule.ahead_ms(t) + CHUNK_MS <= LEAD_MS:
            out.append((schedule.release(item, int(CHUNK_MS * BYTES_PER_MS), t), released))
            released += 1
        still_out = []
        for name, k in out:
            deliver = (k + 1) * CHUNK_MS / 1000 + 0.001
            if 0.44 <= deliver < 0.52:
                deliver = 0.52  # held up on the way back
            if deliver <= t:
                schedule.echo(name, t)
            else:
                still_out.append((name, k))
        out = still_out
        if t >= 0.6 and round(t * 1000) % 10 == 0:
            heard = schedule.heard(item, t)
            assert heard is not None
            errors.append(heard.ms - t * 1000)
        t = round(t + 0.001, 3)
    assert errors and max(abs(e) for e in errors) <= 2, (min(errors), max(errors))
