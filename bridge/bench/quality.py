"""Audio-quality figures: PESQ narrow-band of the streamed path vs a naive resampler.

Both directions, each fed in random chunk sizes (seeded), each scored against the ideal
offline conversion of the same speech (soxr VHQ over the whole signal), exactly as
``tests/audio/test_audio_quality.py`` does:

* uplink, caller -> model: μ-law 8 kHz -> PCM16 24 kHz; reference = offline 8k->24k of the
  same decoded μ-law; both brought back to 8 kHz offline for narrow-band PESQ.
* downlink, model -> caller: PCM16 24 kHz -> 8 kHz μ-law; reference = μ-law of the
  offline 24k->8k conversion (what the caller would hear from an ideal converter).

The naive baseline is ``naive_chunk_resample``: linear interpolation restarted on every
chunk, no anti-alias filter, no state between chunks.

Those references already hold μ-law's own loss. ``bridge bench --compare`` also needs
figures against plain PCM, so the μ-law pass-through (``MODEL_AUDIO_FORMAT=pcmu``: the
bridge forwards payloads, the only loss is μ-law itself) and transcoding compare:
``against_pcm``.

``pesq`` is in the ``bench`` extra, imported only when a score is computed:
``pesq_available`` lets the run skip these rows with ``SKIPPED`` instead of failing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.resample import naive_chunk_resample, resample_offline
from bridge.audio.transcode import Downlink, Uplink
from bridge.audio.wav import read_wav

SEED = 20240611
BAR = 4.45  # DESIGN.md: streamed transcoding must score at least this
SKIPPED = "PESQ rows skipped: pip install 'phone-bridge[bench]'"


def pesq_available() -> bool:
    try:
        importlib.import_module("pesq")
    except ImportError:
        return False
    return True


def random_chunks(data: bytes, seed: int, lo: int, hi: int) -> Iterator[bytes]:
    """Split into random sizes in [lo, hi), aligned to ``lo`` (1 for μ-law, 2 for PCM16)."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(data):
        n = int(rng.integers(lo, hi)) // lo * lo
        yield data[i : i + n]
        i += n


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def _pesq_nb(ref: np.ndarray, deg: np.ndarray) -> float:
    from pesq import pesq

    n = min(len(ref), len(deg))
    return float(pesq(8000, ref[:n].astype(np.float32), deg[:n].astype(np.float32), "nb"))


def _uplink_streamed(payload: bytes, seed: int) -> np.ndarray:
    """What the model hears of a μ-law payload: the bridge's uplink, 24 kHz."""
    uplink = Uplink("mulaw", 8000)
    return pcm16(
        b"".join(uplink.decode(c) for c in random_chunks(payload, seed, 1, 400)) + uplink.flush()
    )


def _downlink_streamed(speech_24k: np.ndarray, seed: int) -> np.ndarray:
    """What the caller hears of the model's 24 kHz audio: the bridge's downlink, decoded."""
    data = speech_24k.astype("<i2").tobytes()
    downlink = Downlink("mulaw", 8000)
    return ulaw_decode(
        b"".join(downlink.encode(c) for c in random_chunks(data, seed, 2, 4000)) + downlink.flush()
    )


def uplink_scores(speech_8k: np.ndarray, seed: int = SEED) -> dict[str, float]:
    payload = ulaw_encode(speech_8k)
    reference = resample_offline(resample_offline(ulaw_decode(payload), 8000, 24000), 24000, 8000)
    streamed = _uplink_streamed(payload, seed)
    naive = np.concatenate(
        [
            naive_chunk_resample(ulaw_decode(c), 8000, 24000)
            for c in random_chunks(payload, seed, 1, 400)
        ]
    )
    return {
        "streamed": _pesq_nb(reference, resample_offline(streamed, 24000, 8000)),
        "naive": _pesq_nb(reference, resample_offline(naive, 24000, 8000)),
    }


def downlink_scores(speech_24k: np.ndarray, seed: int = SEED) -> dict[str, float]:
    data = speech_24k.astype("<i2").tobytes()
    reference = ulaw_decode(ulaw_encode(resample_offline(speech_24k, 24000, 8000)))
    streamed = _downlink_streamed(speech_24k, seed)
    naive = ulaw_decode(
        b"".join(
            ulaw_encode(naive_chunk_resample(pcm16(c), 24000, 8000))
            for c in random_chunks(data, seed, 2, 4000)
        )
    )
    return {"streamed": _pesq_nb(reference, streamed), "naive": _pesq_nb(reference, naive)}


def against_pcm(speech_8k: np.ndarray, speech_24k: np.ndarray, seed: int = SEED) -> dict[str, Any]:
    """PESQ-NB per direction against plain PCM (uplink: the caller's 8 kHz speech;
    downlink: the ideal offline 8 kHz conversion of the model's speech), for the μ-law
    pass-through (a μ-law round trip at 8 kHz, nothing else) and for transcoding."""
    down_ref = resample_offline(speech_24k, 24000, 8000)
    payload = ulaw_encode(speech_8k)
    return {
        "passthrough": {
            "uplink": _pesq_nb(speech_8k, ulaw_decode(payload)),
            "downlink": _pesq_nb(down_ref, ulaw_decode(ulaw_encode(down_ref))),
        },
        "transcoding": {
            "uplink": _pesq_nb(
                speech_8k, resample_offline(_uplink_streamed(payload, seed), 24000, 8000)
            ),
            "downlink": _pesq_nb(down_ref, _downlink_streamed(speech_24k, seed)),
        },
        "reference": "PCM: the caller's 8 kHz speech; the model's speech converted offline",
    }


def speech(fixtures: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 8 kHz and 24 kHz speech fixtures."""
    speech_8k, rate_8k = read_wav(fixtures / "speech-8k.wav")
    speech_24k, rate_24k = read_wav(fixtures / "speech-24k.wav")
    if (rate_8k, rate_24k) != (8000, 24000):
        raise ValueError("fixtures/speech-8k.wav and speech-24k.wav must be 8 and 24 kHz")
    return speech_8k, speech_24k


def measure(fixtures: Path, *, compare: bool = False) -> dict[str, Any]:
    """PESQ-NB (1.0 bad .. 4.64 identical) per direction: streamed, naive, and the bar;
    with ``compare``, also ``against_pcm``."""
    speech_8k, speech_24k = speech(fixtures)
    extra = {"against_pcm": against_pcm(speech_8k, speech_24k)} if compare else {}
    return {
        **extra,
        "uplink": uplink_scores(speech_8k),
        "downlink": downlink_scores(speech_24k),
        "bar": BAR,
        "chunking": "random chunk sizes: uplink 1-400 bytes, downlink 2-4000 bytes",
    }
