"""Paced playout and mark accounting (bridge.playout).

Unit tests pin the pacing and accounting rules; the property test at the end drives a
Playout against a small Twilio-like far end (real-time player, marks echoed when reached
with a random delay, ``clear`` drops queued audio and echoes every pending mark at once)
through random interleavings, and checks what it reports against what the far end played.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from bridge.playout import Heard, Playout, SendAudio, SendMark, mark_name, parse_mark

BPM = 8.0  # mu-law 8 kHz
FRAME = 160  # bytes per 20 ms frame


def ms(n: float) -> bytes:
    """``n`` ms of non-silent mu-law."""
    return b"\x55" * int(n * BPM)


def marks(outs: list[SendAudio | SendMark]) -> list[str]:
    return [o.name for o in outs if isinstance(o, SendMark)]


def audio_sizes(outs: list[SendAudio | SendMark]) -> list[int]:
    return [len(o.payload) for o in outs if isinstance(o, SendAudio)]


def buffered_ms(p: Playout, now: float) -> float:
    """Audio released to the far end and not played yet, as the playout's schedule models it."""
    return p.schedule.ahead_ms(now)


# -- pacing -------------------------------------------------------------------------------


def test_releases_only_lead_ms_in_chunks_each_followed_by_a_mark() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(2000), model_ms=2000)
    outs = p.pull(0.0)
    assert [type(o) for o in outs] == [SendAudio, SendMark] * 4
    assert audio_sizes(outs) == [320] * 4
    assert marks(outs) == ["1:a", "2:a", "3:a", "4:a"]
    assert buffered_ms(p, 0.0) == pytest.approx(160)
    assert p.pull(0.01) == []
    # One chunk is released once 40 ms have played (120 ms left + 40 ms = lead).
    assert p.next_due(0.0) == pytest.approx(0.04)
    assert marks(p.pull(0.04)) == ["5:a"]


def test_echo_jitter_does_not_move_the_schedule_but_a_stall_does() -> None:
    p = Playout(BPM, lead_ms=80, chunk_ms=40)
    p.push("a", 0, ms(1000), model_ms=1000)
    assert marks(p.pull(0.0)) == ["1:a", "2:a"]
    # On the release clock chunk 1 ends at 40 ms: one more chunk is due then.
    assert p.next_due(0.0) == pytest.approx(0.04)
    assert marks(p.pull(0.04)) == ["3:a"]
    # Its echo comes back 30 ms after the modelled end: that is the round trip, not the
    # far end lagging, so the schedule (and what the caller heard) stays put.
    p.on_mark("1:a", 0.070)
    assert buffered_ms(p, 0.070) == pytest.approx(50)
    heard = p.heard(0.070)
    assert heard is not None and heard.ms == 70
    assert marks(p.pull(0.080)) == ["4:a"]
    # Chunk 2 ends at 80 ms but its echo takes 30 + 70 ms: the far end stalled for 70 ms,
    # more than jitter explains, so the rest of the schedule moves back by 70 ms: chunk 2
    # ended at 150 ms (one 30 ms return trip before its echo).
    p.on_mark("2:a", 0.180)
    assert buffered_ms(p, 0.180) == pytest.approx(50)
    heard = p.heard(0.180)
    assert heard is not None and heard.ms == 110
    assert p.pull(0.185) == []
    assert p.next_due(0.180) == pytest.approx(0.190)


def test_never_mixes_items_in_a_chunk_and_pads_the_last_frame() -> None:
    p = Playout(BPM, lead_ms=400, chunk_ms=40)
    p.push("a", 0, ms(50), model_ms=50)
    p.end_item("a")
    p.push("b", 0, ms(100), model_ms=100)
    p.end_item("b")
    outs = p.pull(0.0)
    assert marks(outs) == ["1:a", "2:a", "3:b", "4:b", "5:b"]
    assert audio_sizes(outs) == [320, 160, 320, 320, 160]
    padded = outs[2]
    assert isinstance(padded, SendAudio)
    assert padded.payload == ms(10) + b"\xff" * 80


def test_silence_byte_is_configurable_for_pcm16_legs() -> None:
    p = Playout(32.0, silence=b"\x00")  # PCM16 16 kHz
    p.push("a", 0, b"\x01\x02" * 100, model_ms=6.25)
    p.end_item("a")
    (audio, _) = p.pull(0.0)
    assert isinstance(audio, SendAudio)
    assert audio.payload == b"\x01\x02" * 100 + b"\x00" * 440


def test_only_whole_frames_are_released_while_an_item_streams() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(30), model_ms=30)
    outs = p.pull(0.0)
    assert audio_sizes(outs) == [160]  # 20 ms now, the 10 ms tail waits for more audio
    p.push("a", 0, ms(30), model_ms=60)
    assert audio_sizes(p.pull(0.0)) == [320]


def test_a_short_chunk_waits_while_the_far_end_has_plenty() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(120), model_ms=120)
    assert audio_sizes(p.pull(0.0)) == [320, 320, 320]
    p.push("a", 0, ms(20), model_ms=140)
    # 120 ms buffered: a single frame of a still-streaming item is not worth a message...
    assert p.pull(0.0) == []
    # ...until the far end is down to one chunk,
    assert p.next_due(0.0) == pytest.approx(0.08)
    assert audio_sizes(p.pull(0.08)) == [160]
    # or the frames add up to a whole chunk.
    p.push("a", 0, ms(40), model_ms=180)
    assert audio_sizes(p.pull(0.09)) == [320]


def test_next_due_is_none_when_idle_or_waiting_for_audio() -> None:
    p = Playout(BPM)
    assert p.next_due(0.0) is None
    p.push("a", 0, ms(10), model_ms=10)
    assert p.next_due(0.0) is None  # less than a frame, item still streaming
    p.end_item("a")
    assert p.next_due(0.0) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bytes_per_ms": 0},
        {"bytes_per_ms": 8.0, "chunk_ms": 30},
        {"bytes_per_ms": 8.0, "lead_ms": 20, "chunk_ms": 40},
        {"bytes_per_ms": 8.0, "silence": b""},
        {"bytes_per_ms": 7.99},
    ],
)
def test_rejects_inconsistent_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Playout(**kwargs)  # type: ignore[arg-type]


# -- what the caller heard ----------------------------------------------------------------


def test_heard_is_none_before_anything_plays() -> None:
    p = Playout(BPM)
    assert p.heard(0.0) is None
    p.push("a", 0, ms(500), model_ms=500)
    assert p.heard(0.0) is None
    p.pull(1.0)
    assert p.heard(1.0) is None


def test_heard_follows_the_clock_and_marks() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 2, ms(1000), model_ms=1000)
    p.pull(10.0)
    assert p.heard(10.025) == Heard("a", 2, 25)
    # Without an echo, the estimate follows the schedule into the next chunks.
    assert p.heard(10.070) == Heard("a", 2, 70)
    # An echo 5 ms after the modelled end is the return trip: the schedule stands.
    p.on_mark("1:a", 10.045)
    assert p.heard(10.070) == Heard("a", 2, 70)
    assert p.played_ms("a") == 40
    # Echoes confirm a floor: heard never goes below what marks confirmed.
    p.on_mark("2:a", 10.085)
    assert p.heard(10.0) == Heard("a", 2, 80)


def test_heard_never_exceeds_model_ms() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(35), model_ms=33.5)
    p.end_item("a")
    p.pull(0.0)  # one 40 ms chunk: 35 ms of audio + 5 ms padding
    p.on_mark("1:a", 0.040)
    p.push("b", 0, ms(500), model_ms=500)
    assert p.heard(0.040) is None or p.heard(0.040) == Heard("b", 0, 0)
    p2 = Playout(BPM, lead_ms=160, chunk_ms=40)
    p2.push("a", 0, ms(35), model_ms=33.5)
    p2.end_item("a")
    p2.pull(0.0)
    assert p2.heard(0.039) == Heard("a", 0, 33)


def test_heard_after_an_underrun_starts_at_the_release_time() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(40), model_ms=40)
    p.pull(0.0)
    p.on_mark("1:a", 0.040)
    assert p.heard(0.5) == Heard("a", 0, 40)  # the far end ran dry at 40 ms
    p.push("a", 0, ms(40), model_ms=80)
    p.pull(1.0)  # released late: it starts playing at 1.0, not at the last echo
    assert p.heard(1.0) == Heard("a", 0, 40)
    assert p.heard(1.010) == Heard("a", 0, 50)


def test_an_echo_for_a_later_chunk_confirms_the_earlier_ones() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(1000), model_ms=1000)
    p.pull(0.0)
    p.on_mark("3:a", 0.120)
    assert p.played_ms("a") == 120
    p.on_mark("2:a", 0.121)  # late duplicate: ignored
    assert p.played_ms("a") == 120
    assert p.heard(0.130) == Heard("a", 0, 130)


def test_mark_names_parse_back_and_nothing_else_does() -> None:
    assert parse_mark(mark_name(12, "item_abc")) == (12, "item_abc")
    assert parse_mark("3:a:b") == (3, "a:b")
    for name in ("greeting", "x:a", "", ":a", "-1:a", "\u0661:a"):
        assert parse_mark(name) is None, name


def test_unknown_marks_are_ignored() -> None:
    p = Playout(BPM)
    p.push("a", 0, ms(1000), model_ms=1000)
    p.pull(0.0)
    for name in ("greeting", "x:a", "99:a", "1:b", "", ":a"):
        p.on_mark(name, 0.050)
    assert p.played_ms("a") == 0
    assert p.heard(0.050) == Heard("a", 0, 50)


def test_item_finishes_then_the_next_one_is_current() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(40), model_ms=40)
    p.end_item("a")
    p.push("b", 0, ms(400), model_ms=400)
    p.pull(0.0)
    assert p.heard(0.030) == Heard("a", 0, 30)
    # a's echo is not back yet, but on the schedule b has been playing for 20 ms.
    assert p.heard(0.060) == Heard("b", 0, 20)
    p.on_mark("1:a", 0.041)
    assert p.heard(0.061) == Heard("b", 0, 21)  # b plays from 40 ms on the schedule
    assert p.played_ms("a") == 40


# -- barge-in -----------------------------------------------------------------------------


def test_clear_returns_what_was_heard_and_drops_the_rest() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(1000), model_ms=1000)
    p.pull(0.0)
    p.on_mark("1:a", 0.040)
    assert p.clear(0.055) == Heard("a", 0, 55)
    assert not p.active
    assert p.heard(0.056) is None
    assert p.next_due(0.056) is None
    p.push("a", 0, ms(200), model_ms=1200)  # late audio of the cleared item
    assert p.pull(0.06) == []
    assert not p.active


def test_cleared_items_late_echoes_do_not_count_as_played() -> None:
    p = Playout(BPM, lead_ms=160, chunk_ms=40)
    p.push("a", 0, ms(1000), model_ms=1000)
    assert marks(p.pull(0.0)) == ["1:a", "2:a", "3:a", "4:a"]
    p.on_mark("1:a", 0.040)
    assert p.clear(0.050) == Heard("a", 0, 50)
    # A new item starts right away, before Twilio has processed the clear.
    p.push("b", 0, ms(1000), model_ms=1000)
    assert marks(p.pull(0.050)) == ["5:b", "6:b", "7:b", "8:b"]
    # Twilio now echoes every mark that was pending when the clear arrived.
    for name in ("2:a", "3:a", "4:a"):
        p.on_mark(name, 0.060)
    assert p.played_ms("a") == 40
    assert p.played_ms("b") == 0
    # b's clock still starts at its release, not at the "cleared" echoes.
    assert p.heard(0.080) == Heard("b", 0, 30)
    # Another clear later: the same rules, and a's marks stay meaningless.
    p.on_mark("5:b", 0.090)
    assert p.clear(0.100) == Heard("b", 0, 50)
    for name in ("2:a", "6:b", "7:b", "8:b"):
        p.on_mark(name, 0.110)
    assert p.played_ms("b") == 40
    assert not p.active


def test_drop_item_discards_queued_and_later_audio_but_not_what_is_released() -> None:
    p = Playout(BPM, lead_ms=80, chunk_ms=40)
    p.push("a", 0, ms(1000), model_ms=1000)
    p.pull(0.0)
    p.drop_item("a")
    p.push("a", 0, ms(500), model_ms=1500)
    assert p.active  # two chunks still playing at the far end
    assert p.pull(1.0) == []
    p.on_mark("2:a", 0.080)
    assert p.played_ms("a") == 80
    assert not p.active
    p.push("b", 0, ms(40), model_ms=40)
    assert marks(p.pull(0.1)) == ["3:b"]


def test_drop_item_before_any_audio_discards_its_pushes() -> None:
    p = Playout(BPM)
    p.drop_item("future")
    p.push("future", 0, ms(100), model_ms=100)
    assert not p.active
    assert p.pull(0.0) == []


def test_new_item_implicitly_ends_the_previous_one() -> None:
    p = Playout(BPM, lead_ms=400, chunk_ms=40)
    p.push("a", 0, ms(30), model_ms=30)
    p.push("b", 0, ms(40), model_ms=40)
    p.push("a", 0, ms(30), model_ms=60)  # after a ended: discarded
    outs = p.pull(0.0)
    assert marks(outs) == ["1:a", "2:b"]
    assert audio_sizes(outs) == [320, 320]  # a: 30 ms padded to two frames
    p.on_mark("2:b", 0.2)
    assert not p.active


def test_inactive_after_everything_is_echoed() -> None:
    p = Playout(BPM)
    p.push("a", 0, ms(130), model_ms=130)
    p.end_item("a")
    names: list[str] = []
    t = 0.0
    while (due := p.next_due(t)) is not None:
        t = due
        names += marks(p.pull(t))
    assert p.active
    for name in names:
        p.on_mark(name, t + 0.2)
    assert not p.active
    assert p.played_ms("a") == 140  # 130 ms + 10 ms of padding


# -- property test against a simulated Twilio far end ---------------------------------------


@dataclass
class Queued:
    """Audio of one item waiting at the far end (``name`` None), or a mark."""

    item: str
    remaining: float = 0.0  # bytes
    name: str | None = None


class FarEnd:
    """A Twilio-like player: queue of audio + marks, real-time playback, mark echoes.

    Marks come back in order, ``0..max_delay_ms`` after they are reached. ``clear`` drops
    queued audio and echoes every pending mark immediately (plus the same delay).
    """

    def __init__(self, rng: random.Random, bytes_per_ms: float, max_delay_ms: float) -> None:
        self.rng = rng
        self.bpm = bytes_per_ms
        self.max_delay_ms = max_delay_ms
        self.t = 0.0
        self.queue: deque[Queued] = deque()
        self.played: dict[str, float] = {}  # bytes per item
        self.echoes: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._last_arrival = 0.0

    def advance(self, t: float) -> None:
        assert t >= self.t - 1e-12
        while self.queue:
            head = self.queue[0]
            if head.name is not None:
                self._echo(head.name)
                self.queue.popleft()
                continue
            can = (t - self.t) * 1000.0 * self.bpm
            if can >= head.remaining - 1e-6:  # float dust must not stall the player
                self.t += head.remaining / self.bpm / 1000.0
                self.played[head.item] = self.played.get(head.item, 0.0) + head.remaining
                self.queue.popleft()
            else:
                head.remaining -= can
                self.played[head.item] = self.played.get(head.item, 0.0) + can
                break
        self.t = t

    def receive(self, outs: list[SendAudio | SendMark], t: float) -> None:
        self.advance(t)
        assert len(outs) % 2 == 0
        for audio, mark in zip(outs[::2], outs[1::2], strict=True):
            assert isinstance(audio, SendAudio) and isinstance(mark, SendMark)
            item = mark.name.split(":", 1)[1]
            self.queue.append(Queued(item, float(len(audio.payload))))
            self.queue.append(Queued(item, name=mark.name))

    def clear(self, t: float) -> None:
        self.advance(t)
        for entry in self.queue:
            if entry.name is not None:
                self._echo(entry.name)
        self.queue.clear()

    def next_mark_time(self) -> float | None:
        if not self.queue:
            return None
        head = self.queue[0]
        if head.name is not None:
            return self.t
        return self.t + head.remaining / self.bpm / 1000.0

    def playing(self) -> str | None:
        return self.queue[0].item if self.queue else None

    def played_ms(self, item: str) -> float:
        return self.played.get(item, 0.0) / self.bpm

    def buffered_ms(self) -> float:
        return sum(e.remaining for e in self.queue) / self.bpm

    def _echo(self, name: str) -> None:
        arrival = max(self._last_arrival, self.t + self.rng.uniform(0, self.max_delay_ms) / 1000)
        self._last_arrival = arrival
        heapq.heappush(self.echoes, (arrival, next(self._order), name))


@dataclass
class ModelItem:
    """One assistant item as the model streams it: deltas of random sizes, faster or slower
    than real time."""

    item_id: str
    deltas: list[int]
    speed: float  # audio ms per wall ms
    gap_s: float  # silence before the item starts
    sent: int = 0  # bytes pushed so far
    index: int = 0  # next delta
    cancelled_at: float | None = None
    late_until: float = 0.0


@dataclass
class Stats:
    clears: int = 0
    drops: int = 0
    heard_clears: int = 0
    late_pushes: int = 0
    underruns: int = 0
    checks: int = 0
    cleared_ids: set[str] = field(default_factory=set)


def make_items(rng: random.Random, bpm: float) -> list[ModelItem]:
    items = []
    for n in range(rng.randint(3, 8)):
        total = int(rng.uniform(30, 3000) * bpm)
        deltas = []
        while total > 0:
            size = min(total, int(rng.uniform(5, 400) * bpm))
            deltas.append(size)
            total -= size
        speed = rng.choice([0.6, 0.9, 1.5, 3.0, 8.0, 50.0])
        items.append(ModelItem(f"item_{n}", deltas, speed, rng.uniform(0, 1.5)))
    return items


def check_heard(h: Heard | None, far: FarEnd, model_ms: dict[str, float], frame_ms: int) -> None:
    if h is not None:
        # What the caller heard of the item itself: padding silence past model_ms is not it.
        truth = min(far.played_ms(h.item_id), model_ms[h.item_id])
        assert h.ms <= model_ms[h.item_id]
        assert abs(h.ms - truth) <= frame_ms, (h, truth)
        assert h.ms <= truth + 1e-6, (h, truth)  # never claims more than was heard
    playing = far.playing()
    if playing is not None and (h is None or h.item_id != playing):
        # Only the echo delay of the previous item's last mark can hide this one.
        assert far.played_ms(playing) <= frame_ms, (h, playing, far.played_ms(playing))


def simulate(seed: int) -> Stats:
    rng = random.Random(seed)
    bpm = rng.choice([8.0, 8.0, 8.0, 16.0, 32.0])
    frame_ms = 20
    chunk_ms = rng.choice([20, 40, 40, 60])
    lead_ms = rng.choice([chunk_ms, 120, 160, 160, 240])
    lead_ms = max(lead_ms, chunk_ms)
    frame_bytes = int(bpm * frame_ms)
    playout = Playout(bpm, frame_ms=frame_ms, lead_ms=lead_ms, chunk_ms=chunk_ms)
    far = FarEnd(rng, bpm, max_delay_ms=rng.choice([0.0, 5.0, 12.0]))
    items = make_items(rng, bpm)
    model_ms: dict[str, float] = {}
    stats = Stats()
    clear_rate = rng.choice([0.2, 0.7, 2.0])  # clears per second
    next_clear: float | None = rng.expovariate(clear_rate)

    current = 0
    next_push: float | None = items[0].gap_s
    t = 0.0
    for _ in range(200_000):
        candidates = [
            next_push,
            next_clear,
            playout.next_due(t),
            far.next_mark_time(),
            far.echoes[0][0] if far.echoes else None,
        ]
        pending = [c for c in candidates if c is not None]
        if not pending:
            break
        t = max(t, min(pending))
        far.advance(t)
        while far.echoes and far.echoes[0][0] <= t:
            _, _, name = heapq.heappop(far.echoes)
            playout.on_mark(name, t)

        stats.checks += 1
        check_heard(playout.heard(t), far, model_ms, frame_ms)
        for item_id in model_ms:
            # Marks confirm playback; an echo of a cleared mark must never count.
            assert playout.played_ms(item_id) <= far.played_ms(item_id) + 1e-6, item_id

        if next_clear is not None and t >= next_clear:
            streaming: ModelItem | None = items[current] if current < len(items) else None
            if streaming is not None and (not streaming.sent or streaming.cancelled_at is not None):
                streaming = None
            if streaming is not None and rng.random() < 0.25:
                # Cancelled without a barge-in: its queued and later audio is dropped,
                # what was already released plays out.
                playout.drop_item(streaming.item_id)
                stats.drops += 1
            else:
                heard = playout.clear(t)
                check_heard(heard, far, model_ms, frame_ms)
                assert not playout.active
                stats.clears += 1
                stats.heard_clears += heard is not None
                stats.cleared_ids.update(i.item_id for i in items[:current] if i.sent)
                far.clear(t)
                if streaming is not None and rng.random() < 0.5:
                    playout.drop_item(streaming.item_id)  # as the coordinator may
            if streaming is not None:
                # The model stops the item, but some of its audio is already on the way.
                streaming.cancelled_at = t
                streaming.late_until = t + rng.uniform(0, 0.3)
                stats.cleared_ids.add(streaming.item_id)
            next_clear = t + rng.expovariate(clear_rate) if rng.random() < 0.95 else None

        if next_push is not None and t >= next_push:
            item = items[current]
            late = item.cancelled_at is not None
            if late and t > item.late_until:
                item.index = len(item.deltas)  # the rest is never sent
            if item.index < len(item.deltas):
                size = item.deltas[item.index]
                item.index += 1
                item.sent += size
                model_ms[item.item_id] = item.sent / bpm
                stats.late_pushes += late
                playout.push(item.item_id, 0, b"\x55" * size, model_ms[item.item_id])
                next_push = t + size / bpm / item.speed / 1000.0
            else:
                if not late:
                    playout.end_item(item.item_id)
                current += 1
                next_push = t + items[current].gap_s if current < len(items) else None

        was_idle = far.playing() is None
        outs = playout.pull(t)
        for out in outs:
            if isinstance(out, SendAudio):
                assert out.payload and len(out.payload) % frame_bytes == 0
            else:
                assert out.name.split(":", 1)[1] not in stats.cleared_ids, out.name
        far.receive(outs, t)
        if outs and was_idle and t > 0:
            stats.underruns += 1
        assert far.buffered_ms() <= lead_ms + 1e-6
        assert far.buffered_ms() <= buffered_ms(playout, t) + 1e-6
    else:
        raise AssertionError("simulation did not finish")

    assert next_push is None
    assert not far.queue and not far.echoes
    assert not playout.active
    assert playout.next_due(t) is None
    for item in items:
        if item.item_id not in stats.cleared_ids and item.item_id in model_ms:
            # Played to the end: confirmed playback = audio + padding to a whole frame.
            assert playout.played_ms(item.item_id) == pytest.approx(far.played_ms(item.item_id))
            assert 0 <= far.played_ms(item.item_id) - model_ms[item.item_id] < frame_ms
    return stats


@pytest.mark.parametrize("seed", range(300))
def test_accounting_matches_a_simulated_far_end(seed: int) -> None:
    simulate(seed)


def test_simulation_exercises_clears_drops_late_pushes_and_underruns() -> None:
    totals = Stats()
    for seed in range(100):
        stats = simulate(seed)
        totals.clears += stats.clears
        totals.drops += stats.drops
        totals.heard_clears += stats.heard_clears
        totals.late_pushes += stats.late_pushes
        totals.underruns += stats.underruns
    assert totals.clears > 1000
    assert totals.drops > 20
    assert totals.heard_clears > 100
    assert totals.late_pushes > 100
    assert totals.underruns > 1000
