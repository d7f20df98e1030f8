"""Shared helpers for the ai tests: fixtures as PCM, strict checks against the openai models,
and a driver that streams audio into an AgentSession on an injected clock."""

from __future__ import annotations

import base64
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
from openai.types.realtime import (
    RealtimeClientEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
)

from bridge.local_agent.session import AgentSession

ROOT = Path(__file__).resolve().parents[2]
RATE = 24000

CLIENT_EVENT = pydantic.TypeAdapter(RealtimeClientEvent)
SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)
# The service's session objects carry these on top of the request model's fields.
SESSION_EXTRAS = {"id", "object", "expires_at"}


def load_pcm(name: str) -> np.ndarray:
    path = ROOT / name
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def silence(ms: int) -> np.ndarray:
    return np.zeros(ms * RATE // 1000, dtype=np.int16)


def white_noise(ms: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(ms * RATE / 1000)) * 32768 * 10 ** (dbfs / 20)
    return np.clip(noise, -32768, 32767).astype(np.int16)


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` plus as much of ``b`` as fits."""
    total = a.astype(np.int32)
    n = min(a.size, b.size)
    total[:n] += b[:n]
    return np.clip(total, -32768, 32767).astype(np.int16)


def speech_regions(
    pcm: np.ndarray, *, dbfs: float = -40.0, gap_ms: int = 500
) -> list[tuple[int, int]]:
    """Offline truth: (first, last+1) ms of 10 ms frames louder than ``dbfs``, merging
    pauses shorter than ``gap_ms``."""
    frame = RATE // 100
    n = pcm.size // frame
    power = (pcm[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(10 * np.log10(power / 32768**2 + 1e-12) > dbfs)
    regions: list[list[int]] = []
    for i in loud.tolist():
        if regions and (i - regions[-1][1]) * 10 < gap_ms:
            regions[-1][1] = i + 1
        else:
            regions.append([i, i + 1])
    return [(a * 10, b * 10) for a, b in regions]


def correlation(a: bytes | np.ndarray, b: bytes | np.ndarray) -> float:
    x = np.frombuffer(a, dtype="<i2") if isinstance(a, bytes | bytearray) else a
    y = np.frombuffer(b, dtype="<i2") if isinstance(b, bytes | bytearray) else b
    n = min(x.size, y.size)
    return float(np.corrcoef(x[:n].astype(np.float64), y[:n].astype(np.float64))[0, 1])


# --------------------------------------------------------------------------- strict checks


def _walk(value: Any, path: str) -> None:
    if isinstance(value, pydantic.BaseModel):
        extra = set(value.model_extra or {})
        allowed = SESSION_EXTRAS if isinstance(value, RealtimeSessionCreateRequest) else set()
        assert extra <= allowed, f"{path}: fields unknown to the openai models: {extra - allowed}"
        for name in type(value).model_fields:
            _walk(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}.{key}")


def check_client_event(event: dict[str, Any]) -> None:
    """Valid for the openai package's client-event union, with no unknown fields."""
    _walk(CLIENT_EVENT.validate_python(event), event["type"])


def check_server_event(event: dict[str, Any] | str) -> None:
    """Valid for the openai package's server-event union, with no unknown fields."""
    model = (
        SERVER_EVENT.validate_json(event)
        if isinstance(event, str)
        else SERVER_EVENT.validate_python(event)
    )
    _walk(model, model.type)


# --------------------------------------------------------------------------- session driver


class Driver:
    """Streams audio into an AgentSession in real time on a fake clock, collecting every
    server event (each checked against the openai models) with the time it was released."""

    def __init__(self, session: AgentSession | None = None, **options: Any) -> None:
        self.session = session or AgentSession(now=0.0, seed=7, **options)
        self.t = self.session.now
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._take(self.session.start())

    def _take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for event in events:
            check_server_event(event)
            self.events.append((self.t, event))
        return events

    def send(self, event: dict[str, Any] | str | bytes) -> list[dict[str, Any]]:
        return self._take(self.session.receive(event, self.t))

    def wait(self, seconds: float) -> None:
        """Let time pass, releasing scheduled events when they are due."""
        end = self.t + seconds
        while True:
            due = self.session.next_due()
            if due is None or due > end:
                break
            self.t = max(self.t, due)
            self._take(self.session.poll(self.t))
        self.t = end
        self._take(self.session.poll(self.t))

    def stream(self, pcm: np.ndarray, chunk_ms: int = 20) -> None:
        """Append ``pcm`` in chunks at real-time pace."""
        step = chunk_ms * RATE // 1000
        for i in range(0, pcm.size, step):
            chunk = pcm[i : i + step]
            self.send(
                {
                    "type": "input_audio_buffer.append",
                    "event_id": f"event_a{i}",
                    "audio": base64.b64encode(chunk.tobytes()).decode(),
                }
            )
            self.wait(chunk.size / RATE)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    def types(self, *, skip_deltas: bool = True) -> list[str]:
        deltas = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
        return [e["type"] for _, e in self.events if not (skip_deltas and e["type"] in deltas)]

    def audio_of(self, item_id: str) -> bytes:
        return b"".join(
            base64.b64decode(e["delta"])
            for e in self.of_type("response.output_audio.delta")
            if e["item_id"] == item_id
        )
