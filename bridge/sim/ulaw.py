"""G.711 μ-law for the simulator, by numpy lookup table.

The simulator keeps its own codec instead of importing ``bridge.audio.g711`` so that a
bug in the bridge's codec cannot cancel itself out in a loopback test. Both tables follow
the ITU-T reference (G.191 STL ``g711.c``: ``ulaw_compress`` works on the 14 most
significant bits, one's complement for negatives; ``ulaw_expand``).
https://www.itu.int/rec/T-REC-G.191
"""

import numpy as np

MULAW_SILENCE = 0xFF

# absno >> 6 has 0..7 significant bits: the segment starts where absno reaches these.
_SEGMENT_STARTS = np.array([64, 128, 256, 512, 1024, 2048, 4096], dtype=np.int32)


def _decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _encode_table() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32)
    absno = np.minimum((np.where(x < 0, ~x, x) >> 2) + 33, 0x1FFF)
    seg = np.searchsorted(_SEGMENT_STARTS, absno, side="right").astype(np.int32)
    code = ((7 - seg) << 4) | (0x0F - ((absno >> (seg + 1)) & 0x0F))
    table: np.ndarray = np.where(x >= 0, code | 0x80, code).astype(np.uint8)
    return table


_DECODE = _decode_table()
_ENCODE = _encode_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes → int16 samples."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples → μ-law bytes."""
    idx = np.asarray(pcm, dtype=np.int16).astype(np.int32) + 32768
    return bytes(_ENCODE[idx])
