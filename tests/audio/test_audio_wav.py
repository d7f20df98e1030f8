"""read_wav / write_wav round trip and refusals; the package stays free of I/O frameworks."""

import ast
import wave
from pathlib import Path

import numpy as np
import pytest

import bridge.audio
from bridge.audio.wav import read_wav, write_wav

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_round_trip(tmp_path: Path) -> None:
    pcm = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    path = tmp_path / "x.wav"
    write_wav(path, pcm, 16000)
    back, rate = read_wav(path)
    assert rate == 16000
    assert back.dtype == np.int16
    assert np.array_equal(back, pcm)


def test_fixtures_read() -> None:
    pcm, rate = read_wav(FIXTURES / "speech-8k.wav")
    assert rate == 8000
    assert 11 < len(pcm) / rate < 12
    assert np.abs(pcm).max() > 1000


def test_refuses_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(8))
    with pytest.raises(ValueError, match="mono"):
        read_wav(path)


def test_write_refuses_floats_and_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_wav(tmp_path / "f.wav", np.zeros(4, dtype=np.float32), 8000)
    with pytest.raises(ValueError):
        write_wav(tmp_path / "big.wav", np.array([40000]), 8000)
    write_wav(tmp_path / "i32.wav", np.array([1, -2], dtype=np.int32), 8000)
    assert read_wav(tmp_path / "i32.wav")[0].tolist() == [1, -2]


def test_audio_package_imports_no_io_frameworks() -> None:
    forbidden = {"asyncio", "starlette", "websockets", "socketio", "uvicorn", "aiohttp"}
    for source in Path(bridge.audio.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text(), str(source))
        assert ast.get_docstring(tree), f"{source.name} needs a module docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{source.name} imports {name}"
