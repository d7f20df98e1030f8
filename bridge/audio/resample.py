"""Sample-rate conversion between a call's phone leg and the model's 24 kHz.

Owns the live streaming resampler (``StreamResampler``), the offline reference
(``resample_offline``) that quality tests compare against, and the careless per-chunk
baseline (``naive_chunk_resample``) that benchmarks show is not good enough. Knows
nothing about codecs, framing, sockets or clocks: int16 samples in, int16 samples out.

Why not ``soxr.ResampleStream`` on the live path: it releases output in bursts of
40-60 ms and adds ~33 ms of group delay at 8k<->24k, which alone breaks the 5 ms
per-direction latency budget. For the small rational ratios a call actually uses
(up/down factors L/M with L, M <= 3: 8k<->24k, 16k<->24k, 24k<->48k, 8k<->16k, ...)
we run our own polyphase FIR instead:

* a linear-phase windowed-sinc low-pass (Kaiser window) designed once per rate pair and
  cached at module level; its half length (the look-ahead, hence the delay) is ~3 ms and
  its -6 dB point sits close to where soxr's VHQ filter has it (0.96 vs ~0.95 of the
  lower Nyquist), so streamed output tracks the offline reference closely;
* every ``process()`` call returns each output sample whose inputs are already known, so
  output is proportional to input for any chunk size, down to one sample, and the
  fractional phase carries over from chunk to chunk;
* the leading group delay is trimmed (output sample 0 is input sample 0) and ``flush()``
  emits the tail: in total ``ceil(n_in * out_rate / in_rate)`` samples.

Each output is a dot product of an input window with one polyphase column; a short chunk is
one strided view and one BLAS call, no Python loop over samples. The windows overlap, so
numpy copies them all before the product: for a long chunk (a model's audio delta, a 60 ms
batch of caller audio) that copy cost more than the arithmetic. Long chunks instead run as
a few products of contiguous rows of input with a block-Toeplitz form of the taps
(``_Design.blocks``): about half the time for 50-100 ms. Other ratios fall back to
``soxr.ResampleStream`` (quality LQ: its steadiest, lowest-delay setting).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import soxr

logger = logging.getLogger(__name__)

__all__ = ["StreamResampler", "naive_chunk_resample", "resample_offline"]

Pcm = npt.NDArray[np.int16]
_Sample = TypeVar("_Sample", np.int16, np.int32, np.float32, np.float64)

# Filter design. The delay target comes from the latency budget (5 ms per direction);
# the cap keeps the cost per output sample bounded (it only bites at 48 kHz).
_DELAY_S = 0.003
_MAX_HALF_TAPS_PER_PHASE = 72
_ROLLOFF = 0.96  # -6 dB point / lower Nyquist: where soxr VHQ has it (~3.8 kHz at 8 kHz)
_KAISER_BETA = 5.0  # stop band >= ~55 dB: well below μ-law's own noise (~38 dB SNR)
_MAX_FACTOR = 3  # L and M up to this use the polyphase FIR; others fall back to soxr
_FALLBACK_QUALITY = "LQ"
# Long chunks run in blocks of this many cycles (see _Design.blocks), from this many cycles
# on, for designs whose block-Toeplitz taps come in at most this many parts (the 8, 16 and
# 24 kHz pairs; 48 kHz needs more and gains nothing). Measured on 8k<->24k and 16k<->24k.
_BLOCK = 16
_BLOCK_MIN_CYCLES = 320
_MAX_BLOCK_PARTS = 4

_EMPTY: Pcm = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False
_INT16_MAX = np.float32(32767)
_INT16_MIN = np.float32(-32768)
_ZEROS = np.zeros(4096, dtype=np.float32)  # input past the end, for a long chunk's last block
_ZEROS.flags.writeable = False


@dataclass(frozen=True)
class _Design:
    """A polyphase filter for up = L, down = M, in the shape the streaming loop wants.

    Output ``m`` (before trimming) sits at time ``m*M`` on the L-times-upsampled grid.
    Outputs are computed in cycles of L: cycle ``q`` needs input ``q*M - lookback`` to
    ``q*M + lookahead`` (``width`` samples) and ``taps[:, r]`` gives output ``q*L + r``.
    """

    up: int
    down: int
    taps: npt.NDArray[np.float32]  # (width, L), or (width,) when L == 1
    lookback: int
    lookahead: int
    width: int
    trim: int  # leading outputs that are pure filter delay
    delay_ms: float
    # The taps as a block-Toeplitz matrix, cut in parts of ``_BLOCK * M`` rows: for blocks
    # of ``_BLOCK`` cycles, rows ``b`` to ``b + parts - 1`` of the input (``_BLOCK * M``
    # samples each) times part 0 to ``parts - 1``, summed, give block ``b``'s outputs.
    # Empty when the design needs more than ``_MAX_BLOCK_PARTS``.
    blocks: tuple[npt.NDArray[np.float32], ...]


@functools.cache
def _design(in_rate: int, out_rate: int) -> _Design:
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    fs_up = in_rate * up
    half = min(round(_DELAY_S * fs_up), _MAX_HALF_TAPS_PER_PHASE * up)
    half -= half % down  # whole output samples of delay, so trimming keeps exact alignment
    n_taps = 2 * half + 1
    cutoff = _ROLLOFF / (2 * max(up, down))  # cycles per sample on the upsampled grid
    t = np.arange(n_taps) - half
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n_taps, _KAISER_BETA)
    h *= up / h.sum()  # zero-stuffing by L loses a factor L of gain

    lookback = (n_taps - 1) // up
    lookahead = ((up - 1) * down) // up
    width = lookback + lookahead + 1
    # taps[w, r] = h[r*M + (lookback - w)*L]: the weight of window sample w for phase r.
    w = np.arange(width)[:, None]
    r = np.arange(up)[None, :]
    idx = r * down + (lookback - w) * up
    valid = (idx >= 0) & (idx < n_taps)
    taps = np.where(valid, h[np.clip(idx, 0, n_taps - 1)], 0.0).astype(np.float32)
    step = _BLOCK * down  # input samples per block of cycles
    parts = -(-((_BLOCK - 1) * down + width) // step)
    blocks: tuple[npt.NDArray[np.float32], ...] = ()
    if parts <= _MAX_BLOCK_PARTS:
        toeplitz = np.zeros((parts * step, _BLOCK * up), dtype=np.float32)
        for c in range(_BLOCK):  # cycle c of a block: its window starts c*M samples in
            toeplitz[c * down : c * down + width, c * up : (c + 1) * up] = taps
        blocks = tuple(toeplitz[p * step : (p + 1) * step].copy() for p in range(parts))
    design = _Design(
        up=up,
        down=down,
        taps=taps[:, 0].copy() if up == 1 else taps,
        lookback=lookback,
        lookahead=lookahead,
        width=width,
        trim=half // down,
        delay_ms=1000.0 * half / fs_up,
        blocks=blocks,
    )
    logger.debug(
        "resampler %d->%d: L=%d M=%d taps=%d delay=%.2f ms",
        in_rate,
        out_rate,
        up,
        down,
        n_taps,
        design.delay_ms,
    )
    return design


@functools.cache
def _fallback_delay_ms(in_rate: int, out_rate: int) -> float:
    """Worst output lag of soxr.ResampleStream seen while streaming 20 ms frames."""
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=_FALLBACK_QUALITY)
    frame = np.zeros(max(1, in_rate // 50), dtype=np.int16)
    fed = produced = 0
    worst = 0.0
    for _ in range(50):
        fed += len(frame)
        produced += len(stream.resample_chunk(frame))
        worst = max(worst, fed * out_rate / in_rate - produced)
    return 1000.0 * worst / out_rate


class StreamResampler:
    """Converts one continuous int16 mono stream from ``in_rate`` to ``out_rate``.

    ``process()`` takes chunks of any size and returns the output they complete;
    ``flush()`` returns the tail and leaves the resampler ready for a fresh stream.
    ``delay_ms`` is the algorithmic delay: how far input must run ahead of output.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        g = math.gcd(in_rate, out_rate)
        up, down = out_rate // g, in_rate // g
        self._design: _Design | None = None
        self._soxr: soxr.ResampleStream | None = None
        if up == down:
            self.delay_ms = 0.0
        elif up <= _MAX_FACTOR and down <= _MAX_FACTOR:
            self._design = _design(in_rate, out_rate)
            self.delay_ms = self._design.delay_ms
        else:
            self.delay_ms = _fallback_delay_ms(in_rate, out_rate)
        self._reset()

    def _reset(self) -> None:
        design = self._design
        if design is not None:
            # History starts as `lookback` zeros standing for the silence before the stream.
            self._hist = np.zeros(design.lookback, dtype=np.float32)
            self._hist_start = -design.lookback  # stream index of self._hist[0]
            self._pad = np.zeros(design.lookahead, dtype=np.float32)
            self._n_in = 0
            self._m_next = 0  # next untrimmed output index
        elif self.in_rate != self.out_rate:
            self._soxr = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="int16", quality=_FALLBACK_QUALITY
            )

    def process(self, pcm: Pcm) -> Pcm:
        """Feed the next chunk; return every output sample it makes computable."""
        x = np.asarray(pcm)
        if x.dtype != np.int16:
            if x.dtype.kind == "i" and x.dtype.itemsize == 2:  # e.g. '<i2' on big-endian
                x = x.astype(np.int16)
            else:
                raise TypeError(f"StreamResampler expects int16 samples, got {x.dtype}")
        if x.ndim != 1:
            raise ValueError(f"StreamResampler expects mono (1-D) samples, got shape {x.shape}")
        if self._design is not None:
            return self._process_polyphase(x, self._design)
        if self._soxr is not None:
            out: Pcm = self._soxr.resample_chunk(x)
            return out
        return x.copy()

    def _process_polyphase(self, x: Pcm, d: _Design) -> Pcm:
        if len(x) == 0:
            return _EMPTY
        up, down = d.up, d.down
        # float32 holds int16 exactly; zeros at the end stand in for input not yet seen,
        # which the last, partial cycle touches only with zero-weight taps.
        buf = np.concatenate((self._hist, x, self._pad), dtype=np.float32)
        self._n_in += len(x)
        m0 = self._m_next
        m_end = (self._n_in * up + down - 1) // down  # outputs whose inputs are all known
        out = _EMPTY
        if m_end > m0:
            q0 = m0 // up
            q1 = -(-m_end // up)
            start = q0 * down - d.lookback - self._hist_start
            y = _cycles(buf, start, q1 - q0, d)[m0 - q0 * up : m_end - q0 * up]
            if m0 < d.trim:
                y = y[d.trim - m0 :]
            # minimum/maximum: the same as np.clip at a third of its call overhead.
            np.rint(y, out=y)
            np.minimum(y, _INT16_MAX, out=y)
            np.maximum(y, _INT16_MIN, out=y)
            out = y.astype(np.int16)
            self._m_next = m_end
        keep_from = (self._m_next // up) * down - d.lookback
        self._hist = buf[keep_from - self._hist_start : self._n_in - self._hist_start].copy()
        self._hist_start = keep_from
        return out

    def flush(self) -> Pcm:
        """Return the tail held back by the filter delay; then start a fresh stream."""
        d = self._design
        if d is not None:
            total = (self._n_in * d.up + d.down - 1) // d.down
            owed = total - max(0, self._m_next - d.trim)
            tail = _EMPTY
            if owed > 0:
                # Feed silence until the untrimmed output reaches total + trim.
                need_in = -(-(total + d.trim) * d.down // d.up)
                silence = np.zeros(need_in - self._n_in, dtype=np.int16)
                tail = self._process_polyphase(silence, d)[:owed]
            self._reset()
            return tail
        if self._soxr is not None:
            out: Pcm = self._soxr.resample_chunk(_EMPTY, last=True)
            self._reset()
            return out
        return _EMPTY


def _cycles(
    buf: npt.NDArray[np.float32], start: int, n: int, d: _Design
) -> npt.NDArray[np.float32]:
    """The outputs of ``n`` cycles, flat, the first cycle's window at ``buf[start]``."""
    if n < _BLOCK_MIN_CYCLES or not d.blocks:
        # Row q of `windows` is buf[start + q*M : start + q*M + width] (a strided view).
        windows = np.ndarray((n, d.width), np.float32, buf, start * 4, (d.down * 4, 4))
        flat: npt.NDArray[np.float32] = np.dot(windows, d.taps).reshape(-1)
        return flat
    step = _BLOCK * d.down
    count = -(-n // _BLOCK)
    end = start + (count + len(d.blocks) - 1) * step
    if end > len(buf):  # the last block's cycles past n read zeros; their outputs are cut
        buf = np.concatenate((buf, _ZEROS[: end - len(buf)]))
    rows = buf[start:end].reshape(-1, step)
    y = rows[:count] @ d.blocks[0]
    for p in range(1, len(d.blocks)):
        y += rows[p : p + count] @ d.blocks[p]
    return y.reshape(-1)[: n * d.up]


def resample_offline(
    pcm: npt.NDArray[_Sample], in_rate: int, out_rate: int
) -> npt.NDArray[_Sample]:
    """The ideal reference: whole-signal soxr VHQ (linear phase, delay compensated).

    Keeps the dtype (int16, int32, float32 or float64).
    """
    x = np.asarray(pcm)
    if in_rate == out_rate:
        return x.copy()
    out: npt.NDArray[_Sample] = soxr.resample(x, in_rate, out_rate, quality="VHQ")
    return out


def naive_chunk_resample(pcm: Pcm, in_rate: int, out_rate: int) -> Pcm:
    """The careless baseline: linear interpolation within one chunk, no state between chunks.

    Each chunk restarts the interpolation grid and has no anti-alias filter, so chunk edges
    click and high frequencies alias. Used only by benchmarks and tests as the thing to beat.
    """
    x = np.asarray(pcm, dtype=np.float64)
    n_out = round(len(x) * out_rate / in_rate)
    if n_out == 0 or len(x) == 0:
        return _EMPTY.copy()
    positions = np.arange(n_out) * (in_rate / out_rate)
    y = np.interp(positions, np.arange(len(x)), x)
    out: Pcm = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
    return out
