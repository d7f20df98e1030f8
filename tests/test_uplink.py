"""The caller's audio on its way to the model: batches, levels per frame, pass-through."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.transcode import Uplink
from bridge.barge_in import level_dbfs
from bridge.uplink import UplinkPath, model_audio_for
from tests.e2e import fixture

SPEECH = fixture("speech-8k.wav")[: 8000 * 3]  # int16, 8 kHz
ULAW = ulaw_encode(SPEECH)


def feed(path: UplinkPath, data: bytes, sizes: list[int]) -> tuple[list[float], bytes]:
    """Feed ``data`` in chunks of ``sizes`` (cycled); every level and all the model audio."""
    levels: list[float] = []
    out = bytearray()
    at = 0
    i = 0
    while at < len(data):
        chunk = data[at : at + sizes[i % len(sizes)]]
        at += len(chunk)
        i += 1
        path.add(chunk)
        levels += path.levels()
        if path.full:
            out += path.take()
    levels += path.levels()
    out += path.take()
    return levels, bytes(out)


def test_levels_are_the_level_of_each_decoded_20ms_frame():
    levels, _ = feed(UplinkPath("mulaw", 8000), ULAW, [160])
    decoded = ulaw_decode(ULAW)
    expected = [level_dbfs(decoded[i : i + 160]) for i in range(0, len(decoded), 160)]
    assert len(levels) == len(expected) == 150
    assert np.allclose(levels, expected, atol=1e-6)
    # Silence reads as the floor, not -inf.
    path = UplinkPath("mulaw", 8000)
    path.add(b"\xff" * 160)
    assert path.levels() == [-120.0]


def test_levels_measured_per_batch_are_the_levels_measured_per_frame():
    per_frame, _ = feed(UplinkPath("mulaw", 8000, batch_ms=100), ULAW, [160])
    path = UplinkPath("mulaw", 8000, batch_ms=100)
    per_batch: list[float] = []
    for i in range(0, len(ULAW), 160):
        path.add(ULAW[i : i + 160])
        if path.full:
            per_batch += path.levels()  # five frames in one pass
            path.take()
    assert len(per_batch) == len(per_frame) and np.allclose(per_batch, per_frame)


def test_pcm16_levels_and_audio_match_the_plain_transcoder():
    pcm = (SPEECH.astype(np.int32) // 2).astype("<i2")
    data = pcm.tobytes()
    levels, audio = feed(UplinkPath("pcm16", 16000, batch_ms=40), data, [640])
    frames = [pcm[i : i + 320] for i in range(0, len(pcm), 320)]
    assert np.allclose(levels, [level_dbfs(f) for f in frames if len(f) == 320], atol=1e-6)
    whole = np.frombuffer(Uplink("pcm16", 16000).decode(data), "<i2")
    streamed = np.frombuffer(audio, "<i2")
    assert len(whole) - len(streamed) < 24 * 20  # at most a frame still in the resampler
    # Chunked or whole, the same filter: at most a rounding step apart.
    assert np.abs(streamed.astype(int) - whole[: len(streamed)]).max() <= 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=8), st.sampled_from([20, 60, 100]))
def test_any_chunking_gives_the_same_levels_and_audio(sizes: list[int], batch_ms: int):
    reference_levels, reference = feed(UplinkPath("mulaw", 8000, batch_ms=batch_ms), ULAW, [160])
    levels, audio = feed(UplinkPath("mulaw", 8000, batch_ms=batch_ms), ULAW, sizes)
    assert levels == pytest.approx(reference_levels)
    # The resampler is streamed: chunk boundaries change a sample by a rounding step at most.
    assert len(audio) == len(reference)
    a, b = np.frombuffer(audio, "<i2").astype(int), np.frombuffer(reference, "<i2")
    assert np.abs(a - b).max() <= 1


def test_batches_hold_whole_frames_until_a_batch_is_there():
    path = UplinkPath("mulaw", 8000, batch_ms=60)
    frame = ULAW[:160]
    path.add(frame)
    path.add(frame)
    assert not path.full and len(path.levels()) == 2
    path.add(frame[:100])  # a partial frame is neither metered nor sent
    assert not path.full and path.levels() == []
    path.add(frame[100:])
    assert path.full and len(path.levels()) == 1
    assert len(path.take()) > 0 and path.take() == b""


@pytest.mark.parametrize("model_audio", ["pcmu", "pcmu-in"])
def test_pass_through_sends_the_callers_mulaw_untouched(model_audio):
    path = UplinkPath("mulaw", 8000, model_audio=model_audio, batch_ms=100)
    rng = random.Random(1)
    sizes = [rng.randint(1, 400) for _ in range(50)]
    _, audio = feed(path, ULAW, sizes)
    assert audio == ULAW
    assert path.model_bytes_per_ms == 8.0 and path.delay_ms == 0.0


def test_pass_through_only_from_a_mulaw_8k_leg():
    assert model_audio_for("pcmu", "mulaw", 8000) == "pcmu"
    assert model_audio_for("pcmu", "pcm16", 8000) == "pcm16"
    assert model_audio_for("pcmu", "pcm16", 24000) == "pcm16"
    assert model_audio_for("pcm16", "mulaw", 8000) == "pcm16"
    assert model_audio_for("pcmu-in", "mulaw", 8000) == "pcmu-in"
    assert model_audio_for("pcmu-in", "pcm16", 16000) == "pcm16"
    for wanted in ("pcmu", "pcmu-in"):
        with pytest.raises(ValueError, match="pass-through"):
            UplinkPath("pcm16", 24000, model_audio=wanted)
    for bad in (0, 30, 50):
        with pytest.raises(ValueError, match="multiple"):
            UplinkPath("mulaw", 8000, batch_ms=bad)
