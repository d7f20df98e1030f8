"""G.711 μ-law against the ITU-T reference algorithm, value by value."""

import numpy as np
import pytest

from bridge.audio.g711 import ulaw_decode, ulaw_encode


def _g191_compress(sample: int) -> int:
    """Scalar transcription of ``ulaw_compress`` from the ITU-T G.191 STL (g711.c)."""
    absno = ((~sample) >> 2) + 33 if sample < 0 else (sample >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    code = (high_nibble << 4) | low_nibble
    return code | 0x80 if sample >= 0 else code


def _g191_expand(code: int) -> int:
    """Scalar transcription of ``ulaw_expand`` from the ITU-T G.191 STL (g711.c)."""
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


def test_decode_known_values() -> None:
    decoded = ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F, 0xFE, 0xF0, 0xEF, 0x70]))
    assert decoded.dtype == np.int16
    assert decoded.tolist() == [-32124, 32124, 0, 0, 8, 120, 132, -120]


def test_encode_known_values() -> None:
    pcm = np.array([0, -1, 32767, -32768, 8, -8, 132], dtype=np.int16)
    assert ulaw_encode(pcm) == bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0x7E, 0xEF])


def test_decode_matches_reference_for_all_codes() -> None:
    expected = [_g191_expand(c) for c in range(256)]
    assert ulaw_decode(ALL_CODES).tolist() == expected


def test_encode_matches_reference_for_all_int16() -> None:
    expected = bytes(_g191_compress(int(s)) for s in ALL_SAMPLES)
    assert ulaw_encode(ALL_SAMPLES) == expected


def test_round_trip_of_all_codes() -> None:
    # 0x7F is "negative zero": it decodes to 0, which encodes as 0xFF.
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert again == bytes(expected)


def test_quantiser_is_monotonic_and_symmetric() -> None:
    decoded = ulaw_decode(ulaw_encode(ALL_SAMPLES)).astype(np.int32)
    assert np.all(np.diff(decoded) >= 0)
    positive = ALL_SAMPLES[ALL_SAMPLES > 0].astype(np.int32)
    pos_dec = ulaw_decode(ulaw_encode(positive.astype(np.int16))).astype(np.int32)
    neg_dec = ulaw_decode(ulaw_encode((-positive - 1).astype(np.int16))).astype(np.int32)
    # One's-complement symmetry of the reference: x and -x-1 land in mirrored bins.
    assert np.array_equal(pos_dec, -neg_dec)


def test_quantisation_error_within_half_a_step() -> None:
    x = ALL_SAMPLES.astype(np.int32)
    codes = np.frombuffer(ulaw_encode(ALL_SAMPLES), dtype=np.uint8).astype(np.int32)
    err = np.abs(ulaw_decode(codes.astype(np.uint8).tobytes()).astype(np.int32) - x)
    step = 8 << ((~codes >> 4) & 0x07)  # 8, 16, ..., 1024 on the 16-bit scale
    inside = np.abs(x) <= 32124
    assert np.all(err[inside] <= step[inside] // 2)
    assert err.max() == 32768 - 32124  # -32768 lies beyond the last level: clipped


def test_empty_and_shapes() -> None:
    assert ulaw_decode(b"").shape == (0,)
    assert ulaw_encode(np.zeros(0, dtype=np.int16)) == b""
    assert len(ulaw_encode(np.zeros(160, dtype=np.int16))) == 160
    assert ulaw_encode(np.zeros(160, dtype=np.int16)) == b"\xff" * 160


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(4, dtype=np.float32))
