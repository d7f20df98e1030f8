"""Speech quality of the streamed audio path, judged by PESQ against an ideal offline conversion.

The bar (DESIGN.md): streamed transcoding fed in random chunk sizes scores PESQ-NB >= 4.45
against the same audio converted offline with soxr VHQ. The naive per-chunk resampler must
score clearly below it, which shows the measure can tell good from bad.

How each direction is compared:

* uplink (caller -> model, 8 kHz μ-law -> 24 kHz): reference = offline VHQ 8k -> 24k of the
  same decoded μ-law. Narrow-band PESQ needs 8 kHz, so both are brought back down with the
  same offline VHQ filter; that discards anything above 4 kHz, where upsampling images would
  sit, so the images are checked separately with wide-band PESQ at 16 kHz (0-8 kHz).
* downlink (model -> caller, 24 kHz -> 8 kHz μ-law): reference = μ-law of offline VHQ 24k -> 8k;
  both sides are μ-law, so this is what the caller would hear either way.
* PCM16 legs at 16 and 48 kHz: wide-band PESQ at 16 kHz against the offline conversion.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pesq import pesq

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.resample import naive_chunk_resample, resample_offline
from bridge.audio.transcode import Downlink, Uplink
from bridge.audio.wav import read_wav
from bridge.bench.quality import pcm16, random_chunks

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BAR = 4.45
NAIVE_CEILING = 4.3  # "per-chunk or linear resampling scores ~3.4-4.3"
SEED = 20240611


def _score(rate: int, ref: np.ndarray, deg: np.ndarray, *, same_length: bool = True) -> float:
    # The naive baseline rounds its length per chunk, so it drifts; the streamed path may not.
    if same_length:
        assert abs(len(ref) - len(deg)) <= 1, (len(ref), len(deg))
    n = min(len(ref), len(deg))
    mode = "nb" if rate == 8000 else "wb"
    return float(pesq(rate, ref[:n].astype(np.float32), deg[:n].astype(np.float32), mode))


def _at(rate: int, pcm: np.ndarray, pcm_rate: int) -> np.ndarray:
    return resample_offline(pcm, pcm_rate, rate)


@pytest.fixture(scope="module")
def speech_8k() -> np.ndarray:
    pcm, rate = read_wav(FIXTURES / "speech-8k.wav")
    assert rate == 8000
    return pcm


@pytest.fixture(scope="module")
def speech_24k() -> np.ndarray:
    pcm, rate = read_wav(FIXTURES / "speech-24k.wav")
    assert rate == 24000
    return pcm


# Uplink: what the model receives from a Twilio caller.


def _uplink_streamed(payload: bytes) -> np.ndarray:
    uplink = Uplink("mulaw", 8000)
    parts = [uplink.decode(c) for c in random_chunks(payload, SEED, 1, 400)]
    return pcm16(b"".join(parts) + uplink.flush())


def _uplink_naive(payload: bytes) -> np.ndarray:
    parts = [
        naive_chunk_resample(ulaw_decode(c), 8000, 24000)
        for c in random_chunks(payload, SEED, 1, 400)
    ]
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("convert", "passes"),
    [(_uplink_streamed, True), (_uplink_naive, False)],
    ids=["stream", "naive"],
)
def test_uplink_mulaw_pesq_nb(
    speech_8k: np.ndarray, convert: Callable[[bytes], np.ndarray], passes: bool
) -> None:
    payload = ulaw_encode(speech_8k)
    reference = resample_offline(ulaw_decode(payload), 8000, 24000)
    degraded = _at(8000, convert(payload), 24000)
    score = _score(8000, _at(8000, reference, 24000), degraded, same_length=passes)
    if passes:
        assert score >= BAR
    else:
        assert score < NAIVE_CEILING


def test_uplink_mulaw_has_no_audible_images(speech_8k: np.ndarray) -> None:
    payload = ulaw_encode(speech_8k)
    reference = resample_offline(ulaw_decode(payload), 8000, 24000)
    streamed = _uplink_streamed(payload)
    assert _score(16000, _at(16000, reference, 24000), _at(16000, streamed, 24000)) >= BAR


# Downlink: what a Twilio caller hears of the model.


def _downlink_streamed(pcm24: bytes) -> np.ndarray:
    downlink = Downlink("mulaw", 8000)
    parts = [downlink.encode(c) for c in random_chunks(pcm24, SEED, 2, 4000)]
    return ulaw_decode(b"".join(parts) + downlink.flush())


def _downlink_naive(pcm24: bytes) -> np.ndarray:
    parts = [
        ulaw_encode(naive_chunk_resample(pcm16(c), 24000, 8000))
        for c in random_chunks(pcm24, SEED, 2, 4000)
    ]
    return ulaw_decode(b"".join(parts))


@pytest.mark.parametrize(
    ("convert", "passes"),
    [(_downlink_streamed, True), (_downlink_naive, False)],
    ids=["stream", "naive"],
)
def test_downlink_mulaw_pesq_nb(
    speech_24k: np.ndarray, convert: Callable[[bytes], np.ndarray], passes: bool
) -> None:
    reference = ulaw_decode(ulaw_encode(resample_offline(speech_24k, 24000, 8000)))
    degraded = convert(speech_24k.astype("<i2").tobytes())
    score = _score(8000, reference, degraded, same_length=passes)
    if passes:
        assert score >= BAR
    else:
        assert score < NAIVE_CEILING


# PCM16 legs (browser softphone): wide-band PESQ at 16 kHz.


@pytest.mark.parametrize("rate", [16000, 48000])
def test_pcm16_uplink_pesq_wb(speech_24k: np.ndarray, rate: int) -> None:
    leg = resample_offline(speech_24k, 24000, rate)
    uplink = Uplink("pcm16", rate)
    data = leg.astype("<i2").tobytes()
    streamed = pcm16(
        b"".join(uplink.decode(c) for c in random_chunks(data, SEED, 2, 3000)) + uplink.flush()
    )
    reference = resample_offline(leg, rate, 24000)
    assert _score(16000, _at(16000, reference, 24000), _at(16000, streamed, 24000)) >= BAR


@pytest.mark.parametrize("rate", [16000, 48000])
def test_pcm16_downlink_pesq_wb(speech_24k: np.ndarray, rate: int) -> None:
    downlink = Downlink("pcm16", rate)
    data = speech_24k.astype("<i2").tobytes()
    parts = [downlink.encode(c) for c in random_chunks(data, SEED, 2, 3000)]
    streamed = pcm16(b"".join(parts) + downlink.flush())
    reference = resample_offline(speech_24k, 24000, rate)
    assert _score(16000, _at(16000, reference, rate), _at(16000, streamed, rate)) >= BAR


def test_pcm16_downlink_naive_is_clearly_worse(speech_24k: np.ndarray) -> None:
    data = speech_24k.astype("<i2").tobytes()
    naive = np.concatenate(
        [naive_chunk_resample(pcm16(c), 24000, 16000) for c in random_chunks(data, SEED, 2, 3000)]
    )
    reference = resample_offline(speech_24k, 24000, 16000)
    assert _score(16000, reference, naive, same_length=False) < NAIVE_CEILING
