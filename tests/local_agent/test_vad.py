import numpy as np
import pytest

from bridge.local_agent.vad import EnergyVad, VadStart, VadStop, threshold_dbfs
from tests.ai.helpers import load_pcm, mix, silence, speech_regions, white_noise

SPEECH = load_pcm("fixtures/speech-24k.wav")
PAD_MS = 1500


def run(vad: EnergyVad, pcm: np.ndarray, seed: int = 0) -> list[VadStart | VadStop]:
    """Push in random chunk sizes, like a phone uplink would."""
    rng = np.random.default_rng(seed)
    out: list[VadStart | VadStop] = []
    i = 0
    while i < pcm.size:
        n = int(rng.integers(1, 4000))
        out += vad.push(pcm[i : i + n])
        i += n
    return out


def padded_speech() -> np.ndarray:
    return np.concatenate([silence(PAD_MS), SPEECH, silence(PAD_MS)])


@pytest.mark.parametrize("noise_dbfs", [None, -50.0])
def test_start_and_stop_within_40_ms_of_the_truth(noise_dbfs: float | None) -> None:
    clean = padded_speech()
    truth = speech_regions(clean, dbfs=threshold_dbfs(0.5), gap_ms=500)
    assert len(truth) == 2  # the fixture has one pause longer than 500 ms
    pcm = clean if noise_dbfs is None else mix(clean, white_noise(len(clean) / 24, noise_dbfs))
    decisions = run(EnergyVad(prefix_padding_ms=300, silence_duration_ms=500), pcm)
    starts = [d for d in decisions if isinstance(d, VadStart)]
    stops = [d for d in decisions if isinstance(d, VadStop)]
    assert len(starts) == len(stops) == len(truth)
    for (onset, end), start, stop in zip(truth, starts, stops, strict=True):
        assert abs(start.onset_ms - onset) <= 40
        assert start.audio_start_ms == max(0, start.onset_ms - 300)
        assert abs(stop.audio_end_ms - (end + 500)) <= 40


def test_decisions_do_not_depend_on_chunking() -> None:
    pcm = padded_speech()
    whole = EnergyVad().push(pcm)
    assert whole == run(EnergyVad(), pcm, seed=1) == run(EnergyVad(), pcm, seed=2)


def test_prefix_padding_is_clamped_at_the_start_of_the_stream() -> None:
    pcm = np.concatenate([silence(100), SPEECH[: 24000 * 2], silence(1000)])
    start = EnergyVad(prefix_padding_ms=300).push(pcm)[0]
    assert isinstance(start, VadStart)
    assert start.audio_start_ms == 0 and 90 <= start.onset_ms <= 140


def click(ms: int, dbfs: float = -6.0) -> np.ndarray:
    t = np.arange(ms * 24)
    return (np.sin(2 * np.pi * 1000 * t / 24000) * 32767 * 10 ** (dbfs / 20)).astype(np.int16)


@pytest.mark.parametrize("click_ms", [10, 40, 60])
@pytest.mark.parametrize("background_dbfs", [None, -50.0])
def test_clicks_do_not_trigger(background_dbfs: float | None, click_ms: int) -> None:
    parts = []
    for i in range(10):
        parts += [silence(500 + 7 * i), click(click_ms)]  # at every offset within a frame
    pcm = np.concatenate([*parts, silence(500)])
    if background_dbfs is not None:
        pcm = mix(pcm, white_noise(pcm.size // 24, background_dbfs, seed=3))
    assert run(EnergyVad(), pcm) == []
    # ... while 150 ms of the same tone is speech.
    assert len(EnergyVad().push(np.concatenate([silence(500), click(150), silence(800)]))) == 2


def test_low_level_white_noise_does_not_trigger() -> None:
    assert run(EnergyVad(), white_noise(20_000, -50.0, seed=4)) == []


def test_steady_loud_noise_raises_the_bar() -> None:
    # A hum above the absolute threshold: the noise floor adapts instead of triggering...
    hum = click(10_000, dbfs=-30.0)
    vad = EnergyVad()
    assert run(vad, hum) == []
    assert vad.noise_floor_db > -35
    # ... and speech well above it is still heard.
    louder = np.clip(SPEECH[: 24000 * 2].astype(np.int32) * 2, -32768, 32767).astype(np.int16)
    loud = mix(np.concatenate([louder, silence(1000)]), click(3000, -30.0))
    assert isinstance(run(vad, loud)[0], VadStart)


def test_threshold_sets_the_absolute_level() -> None:
    assert threshold_dbfs(0.5) == -40.0
    assert threshold_dbfs(0.0) < threshold_dbfs(0.9) <= threshold_dbfs(1.0) == threshold_dbfs(2)
    quiet_speech = (padded_speech() * 0.05).astype(np.int16)  # about -26 dB
    assert run(EnergyVad(threshold=0.9), quiet_speech) == []
    assert run(EnergyVad(threshold=0.2), quiet_speech)


def test_stop_now_forgets_the_utterance() -> None:
    vad = EnergyVad()
    assert isinstance(vad.push(np.concatenate([silence(200), SPEECH[:24000]]))[0], VadStart)
    vad.stop_now()
    assert not vad.speaking
    assert vad.push(silence(2000)) == []
