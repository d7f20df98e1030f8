"""G.711 μ-law: the codec of Twilio Media Streams (``audio/x-mulaw``, 8 kHz).

Owns the conversion between 16-bit linear PCM and μ-law bytes, and nothing else: no
resampling, no framing, no I/O. Both directions are a single numpy table lookup, built
once at import from the bit-exact algorithm of the ITU-T reference implementation
(G.191 Software Tools Library, ``g711.c``: ``ulaw_compress`` / ``ulaw_expand``).

The encoder works on the 14 most significant bits, like the reference; negative inputs
use the one's complement (``~x``), which makes the quantiser symmetric around zero: -1 and
0 both land in the zero bins (0x7F and 0xFF), and both decode to 0.

https://www.itu.int/rec/T-REC-G.191 (STL, module G711)
https://www.itu.int/rec/T-REC-G.711
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = ["ulaw_decode", "ulaw_encode"]

_BIAS = 0x84  # 132: offset that makes segment boundaries powers of two
_CLIP = 0x1FFF  # largest biased 14-bit magnitude


def _build_decode_table() -> npt.NDArray[np.int16]:
    """All 256 μ-law codes → int16, as in ``ulaw_expand``."""
    code = np.arange(256, dtype=np.int32)
    inverted = ~code & 0xFF  # μ-law codes are transmitted with all bits inverted
    segment = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << segment) - _BIAS
    value = np.where(inverted & 0x80, -magnitude, magnitude)
    return value.astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    """All 65536 int16 values → μ-law code, as in ``ulaw_compress``.

    Indexed by the int16 sample reinterpreted as uint16, so lookup is a single gather.
    """
    linear = np.arange(65536, dtype=np.int32)
    linear = np.where(linear >= 0x8000, linear - 0x10000, linear)  # uint16 order → int16 value
    negative = linear < 0
    absno = np.where(negative, ~linear, linear) >> 2
    absno = np.minimum(absno + 33, _CLIP)
    # segno = 1 + number of significant bits of (absno >> 6), i.e. 1..8
    segno = np.ones_like(absno)
    rest = absno >> 6
    while np.any(rest):
        segno += rest != 0
        rest >>= 1
    high_nibble = 0x08 - segno
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    code = (high_nibble << 4) | low_nibble
    code = np.where(negative, code, code | 0x80)
    table: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return table


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """μ-law bytes → int16 PCM samples (one sample per byte)."""
    # take(): the same lookup as indexing, at a fraction of fancy indexing's overhead.
    return _DECODE.take(np.frombuffer(data, dtype=np.uint8))


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """int16 PCM samples → μ-law bytes (one byte per sample)."""
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        raise TypeError(f"ulaw_encode expects int16 samples, got {samples.dtype}")
    return _ENCODE.take(samples.reshape(-1).view(np.uint16)).tobytes()
