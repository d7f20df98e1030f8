"""FarEnd: Twilio's outbound playback, driven by an injected clock, checked sample by sample."""

import random

import pytest

from bridge.sim.far_end import FarEnd

SILENCE = 0xFF


def audio(n: int, seed: int = 0) -> bytes:
    """n bytes of recognisable non-silent 'μ-law' (never 0xFF)."""
    rng = random.Random(seed)
    return bytes(rng.randrange(0, 0xFF) for _ in range(n))


def started(t: float = 0.0) -> FarEnd:
    far = FarEnd(8000)
    assert far.advance(t) == (b"", [])
    return far


def test_plays_audio_at_real_time_sample_accurate() -> None:
    far = started()
    a = audio(800)
    far.media(a, 0.0)
    played, marks = far.advance(0.05)
    assert played == a[:400]
    assert marks == []
    assert far.queued_ms == pytest.approx(50.0)
    played, _ = far.advance(0.1)
    assert played == a[400:]
    played, _ = far.advance(0.2)
    assert played == bytes([SILENCE]) * 800


def test_marks_are_echoed_in_order_when_their_audio_has_played() -> None:
    far = started()
    for seq in (1, 2):
        far.media(audio(160, seq), 0.0)
        far.mark(f"{seq}:item_a", 0.0)
    assert far.next_mark_due() == pytest.approx(0.02)
    assert far.advance(0.0199)[1] == []
    assert far.advance(0.02)[1] == ["1:item_a"]
    assert far.next_mark_due() == pytest.approx(0.04)
    assert far.advance(0.05)[1] == ["2:item_a"]
    assert far.next_mark_due() is None
    assert far.marks_played == ["1:item_a", "2:item_a"]


def test_mark_with_nothing_queued_is_echoed_at_once() -> None:
    far = started()
    far.mark("1:item_a", 0.5)
    assert far.next_mark_due() is None
    played, marks = far.advance(0.5)
    assert marks == ["1:item_a"]
    assert len(played) == 4000  # 0.5 s of silence


def test_clear_drops_queued_audio_and_echoes_every_pending_mark() -> None:
    far = started()
    a = audio(800)
    for seq in range(5):
        far.media(a[seq * 160 : (seq + 1) * 160], 0.0)
        far.mark(f"{seq + 1}:item_a", 0.0)
    played, marks = far.advance(0.045)
    assert (played, marks) == (a[:360], ["1:item_a", "2:item_a"])
    assert far.clear(0.05) == ["3:item_a", "4:item_a", "5:item_a"]
    assert far.marks_cleared == ["3:item_a", "4:item_a", "5:item_a"]
    assert far.dropped_samples == 400
    assert far.queued_ms == 0
    played, marks = far.advance(0.1)
    assert played == a[360:400] + bytes([SILENCE]) * 400
    assert marks == []
    assert far.played_ms("item_a") == pytest.approx(50.0)


def test_clear_returns_reached_marks_not_yet_collected_first() -> None:
    far = started()
    far.media(audio(160), 0.0)
    far.mark("1:item_a", 0.0)
    far.media(audio(160, 1), 0.0)
    far.mark("2:item_a", 0.0)
    assert far.clear(0.03) == ["1:item_a", "2:item_a"]
    assert far.marks_played == ["1:item_a"]
    assert far.marks_cleared == ["2:item_a"]


def test_underrun_then_new_audio_starts_at_its_arrival() -> None:
    far = started()
    a, b = audio(160, 1), audio(160, 2)
    far.media(a, 0.0)
    played, _ = far.advance(0.1)
    assert played == a + bytes([SILENCE]) * 640
    far.media(b, 0.25003)  # sample 2000.24 -> starts at sample 2000
    played, _ = far.advance(0.3)
    assert len(played) == 1600
    assert played[:1200] == bytes([SILENCE]) * 1200
    assert played[1200:1360] == b
    assert played[1360:] == bytes([SILENCE]) * 240


def test_audio_arriving_while_playing_queues_behind() -> None:
    far = started()
    a, b = audio(400, 1), audio(400, 2)
    far.media(a, 0.0)
    far.media(b, 0.01)  # arrives mid-a: plays right after it, no gap
    played, _ = far.advance(0.1)
    assert played == a + b


def test_played_ms_per_item_and_current_item() -> None:
    far = started()
    seq = 0
    for item, chunks in (("item_a", 3), ("item_b", 2)):
        for _ in range(chunks):
            seq += 1
            far.media(audio(320, seq), 0.0)  # 40 ms
            far.mark(f"{seq}:{item}", 0.0)
    assert far.current_item() == "item_a"
    far.advance(0.1)
    assert far.played_ms("item_a") == pytest.approx(100.0)
    assert far.played_ms("item_b") == 0.0
    assert far.current_item() == "item_a"
    far.advance(0.15)
    assert far.played_ms("item_a") == pytest.approx(120.0)
    assert far.played_ms("item_b") == pytest.approx(30.0)
    assert far.current_item() == "item_b"
    far.clear(0.15)
    far.advance(1.0)
    assert far.played_items() == {"item_a": pytest.approx(120.0), "item_b": pytest.approx(30.0)}
    assert far.current_item() == "item_b"  # nothing queued: the item heard last


def test_audio_played_before_its_mark_arrives_is_credited_to_that_mark() -> None:
    far = started()
    far.media(audio(160), 0.0)
    far.advance(0.02)
    assert far.current_item() is None
    far.mark("1:item_x", 0.03)
    assert far.played_ms("item_x") == pytest.approx(20.0)
    assert far.current_item() == "item_x"


def test_audio_cleared_before_its_mark_is_unattributed() -> None:
    far = started()
    far.media(audio(320), 0.0)
    far.clear(0.02)
    far.mark("1:item_y", 0.03)  # a later mark does not claim audio from before the clear
    assert far.played_ms("item_y") == 0.0
    assert far.unattributed_samples == 160
    assert far.dropped_samples == 160


def test_random_arrivals_match_a_sample_by_sample_reference() -> None:
    rng = random.Random(7)
    far = started()
    reference = bytearray()  # what a sample-level model of the far end plays
    heard = bytearray()
    end = 0
    t = 0.0
    for i in range(200):
        t += rng.uniform(0.0, 0.03)
        if rng.random() < 0.5:
            chunk = audio(rng.randrange(1, 400), i)
            far.media(chunk, t)
            start = max(int(t * 8000 + 1e-6), end)
            reference += bytes([SILENCE]) * (start - len(reference))
            reference += chunk
            end = start + len(chunk)
        else:
            heard += far.advance(t)[0]
    heard += far.advance(t + 1.0)[0]
    total = int((t + 1.0) * 8000 + 1e-6)
    reference += bytes([SILENCE]) * (total - len(reference))
    assert len(heard) == total
    assert heard == reference[:total]
