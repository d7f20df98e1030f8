"""Call recordings: one stereo PCM16 WAV per call, caller left, agent right.

``CallRecording`` is the runner's audio tap (``bridge.leg.AudioTap``): it is told the
caller's audio as it arrives (``caller``) and what was handed to the caller's leg
(``played``: audio, and ``clear`` on a barge-in), each with the Call's clock. It places both
on one sample timeline counted from the call's start, at the leg's own rate: the caller's
side exactly as it came in and the agent's exactly as it went out, with no resampling (no
cost, nothing gained by upsampling 8 kHz telephone audio, and browsers play 8 kHz WAV).
Caller audio is placed by the leg's own stream clock where it has one (Twilio's media
timestamps), so frames a stall of this process held back keep their place; a leg without
one (browsers) is placed by arrival, and silence fills where it went quiet.

What the right channel holds is what the caller heard, modelled as the far end plays it
(``bridge.schedule``'s model): released audio plays in order in real time from when it was
handed over, and a ``clear`` at ``t`` silences everything scheduled after ``t``. Silence
fills the gaps on both sides.

Writing never blocks the audio path: samples wait in memory and go to one process-wide
writer thread in pieces of at least ``FLUSH_S`` (always before a clear can still change
them). The file has a valid header from the start, and its sizes are patched after every
piece, so a crash loses at most about ``FLUSH_S`` plus ``MARGIN_S``. Recordings older than
the records' retention are deleted by the same thread (``RecordingFiles.purge``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from bridge.audio.g711 import ulaw_decode
from bridge.playout import ClearPlayback, PhoneOut, SendAudio

logger = logging.getLogger(__name__)

FLUSH_S = 1.0  # write at least this much at a time (and at least this often)
MARGIN_S = 0.25  # the latest audio is kept back: late caller frames may still land there
_GAP_S = 0.1  # caller audio arriving this much past where it was due leaves silence
_PURGE_EVERY_S = 3600.0
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
_HEADER_BYTES = 44

# One thread writes every recording of the process, in the order asked: a slow disk
# delays recordings, never calls.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recordings")


def recording_path(directory: str | os.PathLike[str], call_id: str) -> Path:
    """Where the recording of ``call_id`` lives (the id made safe as a file name)."""
    safe = _SAFE_ID.sub("_", call_id)[:120] or "call"
    return Path(directory) / f"{safe}.wav"


def wav_header(channels: int, rate: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM16 WAV header for ``data_bytes`` of samples."""
    block = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class RecordingFiles:
    """The recordings directory: new recordings, and deleting the old ones."""

    def __init__(self, directory: str | os.PathLike[str], retention_days: float | None) -> None:
        self.directory = Path(directory)
        self.retention_days = retention_days
        self._purged_at: float | None = None
        self._lock = threading.Lock()

    def open(self, call_id: str, *, codec: str, rate: int, started_at: float) -> CallRecording:
        """A recording for a call whose clock starts at ``started_at`` (monotonic)."""
        self._maybe_purge()
        return CallRecording(
            recording_path(self.directory, call_id), codec=codec, rate=rate, started_at=started_at
        )

    def _maybe_purge(self) -> None:
        if self.retention_days is None:
            return
        now = time.monotonic()
        with self._lock:
            if self._purged_at is not None and now - self._purged_at < _PURGE_EVERY_S:
                return
            self._purged_at = now
        _executor.submit(self.purge, self.retention_days)

    def purge(self, days: float, *, now: float | None = None) -> int:
        """Delete recordings last written more than ``days`` ago; say how many."""
        cutoff = (time.time() if now is None else now) - days * 86400
        count = 0
        try:
            for path in self.directory.glob("*.wav"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        count += 1
                except OSError as exc:
                    logger.warning("recordings: could not delete %s: %s", path.name, exc)
        except OSError as exc:
            logger.warning("recordings: purge failed: %s", exc)
        if count:
            logger.info("recordings: deleted %d older than %s days", count, days)
        return count


class CallRecording:
    """One call's stereo recording, written as the call goes (see the module doc).

    Call ``caller`` and ``played`` from the event loop with the Call's clock, and ``close``
    once at the end. Never raises into the call: a failing disk is logged once.
    """

    def __init__(self, path: Path, *, codec: str, rate: int, started_at: float) -> None:
        if codec not in ("mulaw", "pcm16"):
            raise ValueError(f"cannot record codec {codec!r}")
        self.path = path
        self.codec = codec
        self.rate = rate
        self.started_at = started_at
        self._base = 0  # sample index of the first sample not yet written
        self._left = _Track()  # caller, from _base
        self._right = _Track()  # agent, from _base
        self._agent_end = 0  # where the agent audio scheduled so far ends (sample index)
        self._stream_origin: int | None = None  # sample index of the leg's stream time 0
        self._flushed_at = started_at
        self._closed = False
        self._file = _FileWriter(path, rate)
        _executor.submit(self._file.open)

    # ------------------------------------------------------------------ the taps

    def caller(self, payload: bytes, now: float, stream_ms: int | None = None) -> None:
        """Caller audio in the leg's format, which arrived at ``now`` (and starts at
        ``stream_ms`` of the leg's own stream, when the leg says)."""
        if self._closed:
            return
        pcm = self._decode(payload)
        cursor = self._base + len(self._left)
        arrived = self._at(now) - len(pcm)  # where it starts, by when it arrived
        if stream_ms is None:  # no stream clock: a leg that went quiet leaves silence
            due = arrived if arrived > cursor + _GAP_S * self.rate else cursor
        else:
            # The leg's own clock: frames a stall of this process held back keep their
            # place, and only audio the stream skipped leaves silence (never past arrival).
            if self._stream_origin is None:
                self._stream_origin = arrived - stream_ms * self.rate // 1000
            due = min(self._stream_origin + stream_ms * self.rate // 1000, arrived)
        if due > cursor:
            self._left.pad_to(due - self._base)
        self._left.append(pcm)
        if now - self._flushed_at >= FLUSH_S:
            upto = self._at(now - MARGIN_S)
            if self._stream_origin is not None:
                # On the stream's clock the caller's side is known only as far as it came:
                # frames a stall held back land there later, not after written silence.
                upto = min(upto, self._base + len(self._left))
            self._flush(upto)
            self._flushed_at = now

    def played(self, outs: list[PhoneOut], now: float) -> None:
        """``outs`` were handed to the caller's leg at ``now``."""
        if self._closed:
            return
        at = self._at(now)
        for out in outs:
            if isinstance(out, ClearPlayback):
                keep = max(at - self._base, 0)
                self._right.cut(keep)
                self._agent_end = min(self._agent_end, self._base + keep)
            elif isinstance(out, SendAudio):
                pcm = self._decode(out.payload)
                start = max(self._agent_end, at, self._base)
                self._right.pad_to(start - self._base)
                self._right.append(pcm)
                self._agent_end = start + len(pcm)

    def close(self, now: float) -> None:
        """The call ended at ``now``: write the rest and finalise the file."""
        if self._closed:
            return
        end = self._at(now)
        self._right.cut(max(end - self._base, 0))  # not heard: the call was over
        self._flush(max(self._base + len(self._left), self._base + len(self._right)))
        self._closed = True
        _executor.submit(self._file.close)

    # ------------------------------------------------------------------ internals

    def _at(self, now: float) -> int:
        return round((now - self.started_at) * self.rate)

    def _decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        if self.codec == "mulaw":
            return ulaw_decode(payload)
        return np.frombuffer(payload[: len(payload) & ~1], dtype="<i2").astype(np.int16)

    def _flush(self, upto: int) -> None:
        count = upto - self._base
        if count <= 0:
            return
        frames = np.empty((count, 2), np.int16)
        frames[:, 0] = self._left.take(count)
        frames[:, 1] = self._right.take(count)
        self._base = upto
        _executor.submit(self._file.write, frames.astype("<i2").tobytes())


class _Track:
    """One channel's samples not yet written: pieces, joined only when written (a frame's
    arrival costs no copy of what is already buffered)."""

    def __init__(self) -> None:
        self._pieces: list[npt.NDArray[np.int16]] = []
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, samples: npt.NDArray[np.int16]) -> None:
        self._pieces.append(samples)
        self._length += len(samples)

    def pad_to(self, length: int) -> None:
        """Silence up to ``length`` samples (never cuts)."""
        if length > self._length:
            self.append(np.zeros(length - self._length, np.int16))

    def cut(self, length: int) -> None:
        """Forget everything past ``length`` samples."""
        if length < self._length:
            joined = self._joined()[:length]
            self._pieces, self._length = [joined], len(joined)

    def take(self, count: int) -> npt.NDArray[np.int16]:
        """The first ``count`` samples (silence where there are none), removed."""
        self.pad_to(count)
        joined = self._joined()
        rest = joined[count:]
        self._pieces, self._length = ([rest] if len(rest) else []), len(rest)
        return joined[:count]

    def _joined(self) -> npt.NDArray[np.int16]:
        if len(self._pieces) != 1:
            self._pieces = [np.concatenate(self._pieces) if self._pieces else _EMPTY]
        return self._pieces[0]


_EMPTY = np.zeros(0, np.int16)


class _FileWriter:
    """The file side, run on the writer thread only."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.data_bytes = 0
        self._file: BinaryIO | None = None
        self._failed = False

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115  (closed in close())
            self._file.write(wav_header(2, self.rate, 0))
            self._file.flush()
        except OSError as exc:
            self._fail(exc)

    def write(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
            self.data_bytes += len(data)
            self._patch()
        except OSError as exc:
            self._fail(exc)

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._patch()
            self._file.close()
        except OSError as exc:
            self._fail(exc)
        self._file = None

    def _patch(self) -> None:
        """Make the sizes in the header match what is written (a valid file at any time)."""
        assert self._file is not None
        self._file.seek(4)
        self._file.write(struct.pack("<I", 36 + self.data_bytes))
        self._file.seek(40)
        self._file.write(struct.pack("<I", self.data_bytes))
        self._file.seek(0, os.SEEK_END)
        self._file.flush()

    def _fail(self, exc: OSError) -> None:
        if not self._failed:
            logger.error("recordings: %s: %s", self.path.name, exc)
        self._failed = True
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def wait_for_writes(timeout_s: float = 30.0) -> bool:
    """Wait until every write asked so far is done (tests, shutdown); False on timeout."""
    done = threading.Event()
    _executor.submit(done.set)
    return done.wait(timeout_s)
