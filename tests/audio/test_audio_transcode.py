"""Uplink / Downlink codecs: shapes, lengths, state across payloads."""

import numpy as np
import pytest

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.transcode import (
    MODEL_RATE,
    MULAW_SILENCE,
    Downlink,
    Uplink,
)


def _noise(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 3000).astype(np.int16)


def _split(data: bytes, seed: int, hi: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    parts, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, hi))
        parts.append(data[i : i + n])
        i += n
    return parts


def test_uplink_mulaw_20ms_frames() -> None:
    up = Uplink("mulaw", 8000)
    assert up.delay_ms == pytest.approx(3.0)
    payload = ulaw_encode(_noise(160 * 10))
    sizes = [len(up.decode(payload[i : i + 160])) for i in range(0, len(payload), 160)]
    # 20 ms at 24 kHz = 960 bytes; the first frame is short by the 3 ms filter delay.
    assert sizes == [960 - 144] + [960] * 9
    assert len(up.flush()) == 144


def test_uplink_mulaw_matches_decode_then_resample() -> None:
    pcm = _noise(4000)
    payload = ulaw_encode(pcm)
    streamed = Uplink("mulaw", 8000)
    out = b"".join(streamed.decode(p) for p in _split(payload, 3, 200)) + streamed.flush()
    whole = Uplink("pcm16", 8000)
    ref = whole.decode(ulaw_decode(payload).astype("<i2").tobytes()) + whole.flush()
    assert len(out) == len(ref) == 2 * 3 * len(pcm)
    diff = np.frombuffer(out, "<i2").astype(np.int32) - np.frombuffer(ref, "<i2")
    assert np.max(np.abs(diff)) <= 1


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_uplink_pcm16_handles_odd_byte_splits(rate: int) -> None:
    data = _noise(rate // 10).astype("<i2").tobytes()
    whole = Uplink("pcm16", rate)
    ref = whole.decode(data) + whole.flush()
    split = Uplink("pcm16", rate)
    out = b"".join(split.decode(p) for p in _split(data, 5, 333)) + split.flush()
    assert len(out) == len(ref) == 2 * (rate // 10) * MODEL_RATE // rate
    diff = np.frombuffer(out, "<i2").astype(np.int32) - np.frombuffer(ref, "<i2")
    assert np.max(np.abs(diff)) <= 1


def test_downlink_mulaw_lengths_and_bytes_per_ms() -> None:
    down = Downlink("mulaw", 8000)
    assert down.bytes_per_ms == 8.0
    pcm24 = _noise(480 * 10).astype("<i2").tobytes()
    sizes = [len(down.encode(pcm24[i : i + 960])) for i in range(0, len(pcm24), 960)]
    assert sizes == [160 - 24] + [160] * 9
    assert len(down.flush()) == 24


def test_downlink_silence_is_mulaw_silence() -> None:
    down = Downlink("mulaw", 8000)
    out = down.encode(bytes(960 * 5)) + down.flush()
    assert out == MULAW_SILENCE * 800


@pytest.mark.parametrize(("rate", "bytes_per_ms"), [(16000, 32.0), (24000, 48.0), (48000, 96.0)])
def test_downlink_pcm16(rate: int, bytes_per_ms: float) -> None:
    down = Downlink("pcm16", rate)
    assert down.bytes_per_ms == bytes_per_ms
    data = _noise(MODEL_RATE // 10).astype("<i2").tobytes()
    out = b"".join(down.encode(p) for p in _split(data, 9, 501)) + down.flush()
    assert len(out) == bytes_per_ms * 100


def test_downlink_drops_dangling_odd_byte_at_flush() -> None:
    down = Downlink("pcm16", 24000)
    assert down.encode(b"\x01\x00\x02") == b"\x01\x00"
    assert down.flush() == b""
    assert down.encode(b"\x03\x00") == b"\x03\x00"  # the stray byte did not leak into this


def test_unknown_codec_or_rate_rejected() -> None:
    with pytest.raises(ValueError):
        Uplink("alaw", 8000)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Downlink("mulaw", 0)
