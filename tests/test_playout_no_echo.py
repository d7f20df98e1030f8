"""Paced playout toward a far end that never echoes marks (``echoes_marks=False``).

Chunks retire at their modelled end, ``active`` falls when the last one has played, and a
barge-in is truncated from the release schedule alone. The last test measures how exact
that truncation is against a far end with delay, jitter and a playback stall, side by
side with a far end that echoes its marks (the figures the README quotes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from bridge.playout import Playout, SendAudio, SendMark

BPM = 32.0  # PCM16 16 kHz: 32 bytes per ms
LEAD_MS, CHUNK_MS = 160, 40


def ms(n: float) -> bytes:
    return b"\x00" * int(n * BPM)


def drain(p: Playout, until: float, t: float = 0.0) -> tuple[float, list[SendAudio | SendMark]]:
    """Call ``pull`` at every ``next_due`` up to ``until``; the last time and what went out."""
    outs: list[SendAudio | SendMark] = []
    while (due := p.next_due(t)) is not None and due <= until:
        t = due
        outs += p.pull(t)
    return t, outs


def test_chunks_retire_at_their_modelled_end_without_echoes() -> None:
    p = Playout(BPM, lead_ms=LEAD_MS, chunk_ms=CHUNK_MS, silence=b"\x00", echoes_marks=False)
    p.push("a", 0, ms(200), model_ms=200)
    p.end_item("a")
    t, outs = drain(p, until=0.15)
    sent_ms = sum(len(o.payload) for o in outs if isinstance(o, SendAudio)) / BPM
    assert sent_ms == 200  # 160 at once, the rest as the first chunk plays out
    assert p.active and p.played_ms("a") == 120  # three 40 ms chunks have played by 0.15 s
    t, _ = drain(p, until=10.0, t=t)
    assert t == pytest.approx(0.2)  # the pacer is woken for the last chunk's end
    assert not p.active
    assert p.played_ms("a") == 200
    assert p.next_due(t) is None


def test_an_echoing_far_end_still_waits_for_its_echoes() -> None:
    p = Playout(BPM, lead_ms=LEAD_MS, chunk_ms=CHUNK_MS, silence=b"\x00")
    p.push("a", 0, ms(80), model_ms=80)
    p.end_item("a")
    drain(p, until=10.0)
    assert p.active and p.played_ms("a") == 0  # nothing retires without an echo


def test_barge_in_is_truncated_from_the_schedule() -> None:
    p = Playout(BPM, lead_ms=LEAD_MS, chunk_ms=CHUNK_MS, silence=b"\x00", echoes_marks=False)
    p.push("a", 0, ms(1000), model_ms=1000)
    p.end_item("a")
    drain(p, until=0.5)
    heard = p.clear(0.5)
    assert heard is not None and heard.item_id == "a" and heard.ms == 500
    assert not p.active


# -- how exact: a far end with delay, jitter and a stall, with and without echoes ----------


@dataclass
class Player:
    """Plays chunks in order in real time once they arrive (``delay_s`` plus jitter after
    release); stalls ``stall_s`` once, at ``stall_at``, as a browser's audio thread may."""

    delay_s: float
    jitter_s: float
    stall_at: float
    stall_s: float
    rng: random.Random

    def __post_init__(self) -> None:
        self.spans: list[tuple[float, float, float, str]] = []  # start, end, ms before, mark
        self.free = 0.0
        self.arrived = 0.0
        self.item_ms = 0.0

    def receive(self, outs: list[SendAudio | SendMark], t: float) -> None:
        for audio, mark in zip(outs[::2], outs[1::2], strict=True):
            assert isinstance(audio, SendAudio) and isinstance(mark, SendMark)
            self.arrived = max(self.arrived, t + self.delay_s + self.rng.uniform(0, self.jitter_s))
            start = max(self.free, self.arrived)
            if start <= self.stall_at < start + 0.04 or self.free <= self.stall_at < start:
                start += self.stall_s
            duration = len(audio.payload) / BPM / 1000
            self.spans.append((start, start + duration, self.item_ms, mark.name))
            self.item_ms += duration * 1000
            self.free = start + duration

    def heard_ms(self, at: float) -> float:
        """What had been played when a ``clear`` arriving at ``at`` stops it."""
        for start, end, before, _ in self.spans:
            if at < end:
                return before + max(0.0, at - start) * 1000
        return self.item_ms

    def echoes(self, since: float, until: float) -> list[tuple[float, str]]:
        return [
            (end + self.delay_s, name)
            for _, end, _, name in self.spans
            if since < end + self.delay_s <= until
        ]


def truncation_errors(*, echoes: bool, seed: int, stall_s: float) -> list[float]:
    """Estimated minus true heard ms at barge-ins spread over a 4 s item (after 1.1 s:
    after the stall, if any)."""
    errors = []
    for k in range(12):
        rng = random.Random(seed * 100 + k)
        p = Playout(BPM, lead_ms=LEAD_MS, chunk_ms=CHUNK_MS, silence=b"\x00", echoes_marks=echoes)
        player = Player(0.04, 0.02, stall_at=1.0, stall_s=stall_s, rng=rng)
        p.push("a", 0, ms(4000), model_ms=4000)
        p.end_item("a")
        barge_at = 1.1 + k * 0.25 + rng.uniform(0, 0.04)
        t = 0.0
        while True:
            due = p.next_due(t)
            step = min(due if due is not None else barge_at, t + 0.005, barge_at)
            if echoes:
                for at, name in player.echoes(t, step):
                    p.on_mark(name, at)
            t = step
            if t >= barge_at:
                break
            player.receive(p.pull(t), t)
        heard = p.clear(barge_at)
        estimate = heard.ms if heard is not None else 0
        errors.append(estimate - player.heard_ms(barge_at + player.delay_s))
    return errors


def test_truncation_exactness_with_and_without_echoes() -> None:
    """40 ms one-way delay, 0-20 ms jitter; then the same with a 150 ms playback stall.

    Without a stall both are as exact as the first chunk's jitter. After a stall an
    echoing far end re-anchors the schedule within an echo or two; a silent one cannot
    know, so its estimate runs ahead by the stall until the item ends."""

    def errors(echoes: bool, stall_s: float) -> list[float]:
        return [
            e
            for seed in range(5)
            for e in truncation_errors(echoes=echoes, seed=seed, stall_s=stall_s)
        ]

    def mean(errors: list[float]) -> float:
        return sum(map(abs, errors)) / len(errors)

    steady_echo, steady_silent = errors(True, 0.0), errors(False, 0.0)
    stall_echo, stall_silent = errors(True, 0.15), errors(False, 0.15)
    print(
        "truncation error (ms, mean/max): steady: echoing "
        f"{mean(steady_echo):.0f}/{max(map(abs, steady_echo)):.0f}, non-echoing "
        f"{mean(steady_silent):.0f}/{max(map(abs, steady_silent)):.0f}; after a 150 ms stall: "
        f"echoing {mean(stall_echo):.0f}/{max(map(abs, stall_echo)):.0f}, non-echoing "
        f"{mean(stall_silent):.0f}/{max(map(abs, stall_silent)):.0f}"
    )
    assert max(map(abs, steady_silent)) <= 21 and max(map(abs, steady_echo)) <= 21
    assert mean(stall_echo) <= 25
    assert 130 <= mean(stall_silent) <= 171
