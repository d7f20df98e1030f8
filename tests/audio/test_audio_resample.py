"""StreamResampler: lengths, steady output, alignment, delay, frequency response, state."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.resample import StreamResampler, naive_chunk_resample, resample_offline
from bridge.audio.wav import read_wav

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
POLYPHASE_PAIRS = [
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (48000, 24000),
    (24000, 48000),
    (8000, 16000),
]
ALL_PAIRS = [*POLYPHASE_PAIRS, (24000, 24000), (44100, 24000)]


def _chunks(x: np.ndarray, rng: np.random.Generator, hi: int = 700) -> Iterator[np.ndarray]:
    i = 0
    while i < len(x):
        n = int(rng.integers(1, hi))
        yield x[i : i + n]
        i += n


def _stream(r: StreamResampler, x: np.ndarray, seed: int = 0, hi: int = 700) -> np.ndarray:
    parts = [r.process(c) for c in _chunks(x, np.random.default_rng(seed), hi)]
    parts.append(r.flush())
    return np.concatenate(parts)


def _noise(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 4000).astype(np.int16)


def _tone(freq: float, rate: int, seconds: float = 0.5, amp: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _middle(v: np.ndarray) -> np.ndarray:
    return v[len(v) // 4 : -len(v) // 4].astype(np.float64)


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(_middle(v) ** 2)))


def _one_shot(in_rate: int, out_rate: int, x: np.ndarray) -> np.ndarray:
    r = StreamResampler(in_rate, out_rate)
    return np.concatenate([r.process(x), r.flush()])


@pytest.mark.parametrize(("in_rate", "out_rate"), ALL_PAIRS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 159, 160, 161, 479, 480, 1001, 4410])
def test_total_length(in_rate: int, out_rate: int, n: int) -> None:
    y = _stream(StreamResampler(in_rate, out_rate), _noise(n), hi=50)
    assert y.dtype == np.int16
    assert abs(len(y) - round(n * out_rate / in_rate)) <= 1
    if (in_rate, out_rate) in POLYPHASE_PAIRS:
        assert len(y) == -(-n * out_rate // in_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
def test_output_keeps_pace_with_input_one_sample_at_a_time(in_rate: int, out_rate: int) -> None:
    r = StreamResampler(in_rate, out_rate)
    lag = round(r.delay_ms * out_rate / 1000)  # output samples held back by the filter
    emitted = 0
    for n, sample in enumerate(_noise(3 * in_rate // 100), start=1):
        emitted += len(r.process(sample.reshape(1)))
        assert emitted == max(0, -(-n * out_rate // in_rate) - lag)


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
def test_steady_20ms_frames_give_steady_output(in_rate: int, out_rate: int) -> None:
    r = StreamResampler(in_rate, out_rate)
    frame = in_rate // 50
    sizes = [len(r.process(f)) for f in _noise(frame * 20).reshape(20, frame)]
    lag = round(r.delay_ms * out_rate / 1000)
    assert sizes[0] == out_rate // 50 - lag
    assert sizes[1:] == [out_rate // 50] * 19


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("hi", [97, 3000])  # short chunks only; short and long (in blocks)
def test_chunk_size_invariance(in_rate: int, out_rate: int, seed: int, hi: int) -> None:
    x = _noise(in_rate, seed)
    whole = _one_shot(in_rate, out_rate, x)
    streamed = _stream(StreamResampler(in_rate, out_rate), x, seed=seed, hi=hi)
    assert len(streamed) == len(whole)
    # Same dot products either way; only float32 summation order may differ.
    assert np.max(np.abs(streamed.astype(np.int32) - whole)) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
def test_impulse_comes_out_aligned_after_delay_ms(in_rate: int, out_rate: int) -> None:
    r = StreamResampler(in_rate, out_rate)
    assert 0 < r.delay_ms <= 3.0
    lookahead = round(r.delay_ms * in_rate / 1000)  # input samples the filter waits for
    assert lookahead == pytest.approx(r.delay_ms * in_rate / 1000)
    step = in_rate // np.gcd(in_rate, out_rate)
    pos = 20 * step  # an input index that maps to a whole output index
    target = pos * out_rate // in_rate
    x = np.zeros(pos + 200, dtype=np.int16)
    x[pos] = 20000
    out: list[int] = []
    first_seen_at = None
    for n, sample in enumerate(x, start=1):
        out.extend(r.process(sample.reshape(1)).tolist())
        if first_seen_at is None and len(out) > target:
            first_seen_at = n
    y = np.array(out + r.flush().tolist())
    assert int(np.argmax(y)) == target
    # Output sample `target` needed exactly `lookahead` input samples past the impulse.
    assert first_seen_at == pos + 1 + lookahead
    # Linear phase: the response is symmetric around the peak.
    half = 10
    around = y[target - half : target + half + 1].astype(np.int32)
    assert np.max(np.abs(around - around[::-1])) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
def test_passband_is_flat(in_rate: int, out_rate: int) -> None:
    nyquist = min(in_rate, out_rate) / 2
    for freq in (300.0, 1000.0, 0.5 * nyquist, 0.8 * nyquist):
        x = _tone(freq, in_rate)
        gain_db = 20 * np.log10(_rms(_one_shot(in_rate, out_rate, x)) / _rms(x))
        assert abs(gain_db) < 0.05, (freq, gain_db)


@pytest.mark.parametrize(("in_rate", "out_rate"), [p for p in POLYPHASE_PAIRS if p[1] < p[0]])
def test_decimation_rejects_aliases(in_rate: int, out_rate: int) -> None:
    nyquist = out_rate / 2
    for freq in (1.1 * nyquist, 1.3 * nyquist, 1.7 * nyquist):
        x = _tone(freq, in_rate)
        y = _one_shot(in_rate, out_rate, x)
        assert 20 * np.log10(_rms(y) / _rms(x) + 1e-9) < -50, freq


@pytest.mark.parametrize(("in_rate", "out_rate"), [p for p in POLYPHASE_PAIRS if p[1] > p[0]])
def test_interpolation_rejects_images(in_rate: int, out_rate: int) -> None:
    nyquist = in_rate / 2
    for freq in (0.25 * nyquist, 0.6 * nyquist, 0.9 * nyquist):
        y = _middle(_one_shot(in_rate, out_rate, _tone(freq, in_rate)))
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
        f = np.fft.rfftfreq(len(y), 1 / out_rate)
        image_share = spectrum[f > 1.05 * nyquist].sum() / spectrum.sum()
        assert 10 * np.log10(image_share) < -50, freq


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
def test_tracks_the_offline_reference(in_rate: int, out_rate: int) -> None:
    speech, rate = read_wav(FIXTURES / "speech-24k.wav")
    # Keep the signal inside the band both filters pass unchanged (< 0.8 x 4 kHz).
    band = resample_offline(resample_offline(speech, rate, 6000), 6000, rate)
    x = resample_offline(band[: rate * 3], rate, in_rate)
    ref = resample_offline(x, in_rate, out_rate).astype(np.float64)
    y = _stream(StreamResampler(in_rate, out_rate), x).astype(np.float64)
    assert len(y) == len(ref)
    snr_db = 10 * np.log10(np.sum(ref**2) / np.sum((y - ref) ** 2))
    assert snr_db > 50


def test_flush_starts_a_fresh_stream() -> None:
    r = StreamResampler(8000, 24000)
    x = _noise(800)
    first = np.concatenate([r.process(x), r.flush()])
    second = np.concatenate([r.process(x), r.flush()])
    assert np.array_equal(first, second)
    assert len(r.flush()) == 0


def test_pass_through() -> None:
    r = StreamResampler(24000, 24000)
    x = _noise(480)
    assert r.delay_ms == 0
    assert np.array_equal(r.process(x), x)
    assert len(r.flush()) == 0


def test_other_ratios_fall_back_to_soxr() -> None:
    speech, rate = read_wav(FIXTURES / "speech-24k.wav")
    x = resample_offline(speech[: rate * 2], rate, 44100)
    r = StreamResampler(44100, 24000)
    assert r.delay_ms > 0
    y = _stream(r, x).astype(np.float64)
    ref = resample_offline(x, 44100, 24000).astype(np.float64)
    assert abs(len(y) - len(ref)) <= 1
    n = min(len(y), len(ref))
    assert np.corrcoef(y[:n], ref[:n])[0, 1] > 0.99


def test_filter_design_is_shared() -> None:
    a, b = StreamResampler(8000, 24000), StreamResampler(8000, 24000)
    assert a._design is b._design


def test_rejects_bad_input() -> None:
    r = StreamResampler(8000, 24000)
    with pytest.raises(TypeError):
        r.process(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError):
        r.process(np.zeros((10, 2), dtype=np.int16))
    with pytest.raises(ValueError):
        StreamResampler(0, 24000)


def test_naive_chunk_resample_is_stateless() -> None:
    x = _noise(160)
    a = naive_chunk_resample(x, 8000, 24000)
    assert a.dtype == np.int16
    assert len(a) == 480
    assert np.array_equal(a, naive_chunk_resample(x, 8000, 24000))
    assert len(naive_chunk_resample(_noise(481), 24000, 8000)) == 160


def test_resample_offline_keeps_dtype_and_length() -> None:
    x = _noise(8000)
    y = resample_offline(x, 8000, 24000)
    assert y.dtype == np.int16
    assert len(y) == 24000
    z = resample_offline(x.astype(np.float32), 8000, 16000)
    assert z.dtype == np.float32
    assert len(z) == 16000


@pytest.mark.parametrize(("in_rate", "out_rate"), POLYPHASE_PAIRS)
def test_full_scale_overshoot_saturates_instead_of_wrapping(in_rate: int, out_rate: int) -> None:
    # A full-scale square wave rings past int16 at its edges (Gibbs); that must clip.
    period = in_rate // 100
    x = np.where(np.arange(in_rate // 10) % period < period // 2, 32767, -32768).astype(np.int16)
    y = _one_shot(in_rate, out_rate, x)
    t = np.arange(len(y)) * in_rate / out_rate  # input time of each output sample
    phase = t % period
    inside_high = (phase > period * 0.1) & (phase < period * 0.4)
    inside_low = (phase > period * 0.6) & (phase < period * 0.9)
    assert y.max() == 32767
    assert y.min() == -32768
    assert np.all(y[inside_high] > 20000)
    assert np.all(y[inside_low] < -20000)
