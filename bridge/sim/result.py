"""What a simulated call produced: the timeline, clear and mark records, and the audio.

Also owns the small energy gate that turns audio into speech start/end events and the
text rendering of a timeline. Pure code: no sockets, no clock.

All times are seconds on the call timeline, whose zero is the moment the simulator sent
``start`` (the media clock's zero: the first caller frame covers 0 to 20 ms). ``heard[i]`` and
``sent[i]`` are both the sample at ``i / 8000`` seconds on that timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RATE = 8000
CLEARED_SUFFIX = " (cleared)"  # appended to a mark_echo event's detail (the mark name)


@dataclass(frozen=True)
class TimelineEvent:
    """One thing that happened on the call.

    ``kind`` is one of: twiml, connected, caller_speech_start, caller_speech_end,
    agent_audio_start, agent_audio_end, clear, mark_echo, violation, stop, closed.
    """

    t: float
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class ClearRecord:
    """A ``clear`` from the bridge: the item that was playing and how much of it truly played.

    ``played_ms`` is sample-accurate far-end playback of that item up to the clear (all of
    its chunks, including ones that finished before). ``dropped_ms`` is the queued audio
    (of any item) the clear discarded.
    """

    t: float
    item_id: str | None
    played_ms: float
    dropped_ms: float = 0.0


@dataclass(frozen=True)
class MarkEcho:
    """A mark the simulator echoed back; ``cleared`` when it was echoed because of a clear."""

    t: float
    name: str
    cleared: bool


@dataclass(frozen=True, eq=False)
class CallResult:
    """Everything a simulated call observed. Arrays are int16 at 8 kHz on the call timeline."""

    heard: np.ndarray
    sent: np.ndarray
    timeline: list[TimelineEvent]
    clears: list[ClearRecord]
    marks: list[MarkEcho]
    violations: list[str]
    close_code: int | None
    closed_by: str  # "caller" (simulator hung up) or "bridge" (bridge closed the socket)
    stream_sid: str
    call_sid: str
    account_sid: str
    twiml: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    played_ms: dict[str, float] = field(default_factory=dict)  # far-end playback per item

    def events(self, kind: str) -> list[TimelineEvent]:
        """The timeline events of one kind."""
        return [e for e in self.timeline if e.kind == kind]


class EnergyGate:
    """Streaming speech/no-speech segmentation by block RMS with a hangover.

    A segment starts at the first of ``min_blocks`` consecutive blocks above the threshold
    and ends at the end of the last loud block once ``hangover_ms`` of quiet followed.
    ``feed`` returns ``(t, started)`` pairs, ``t`` in seconds from the first sample fed.
    """

    def __init__(
        self,
        rate: int = RATE,
        *,
        block_ms: int = 20,
        threshold_dbfs: float = -45.0,
        hangover_ms: int = 600,
        min_blocks: int = 2,
    ) -> None:
        self.rate = rate
        self._block = rate * block_ms // 1000
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self._hang_blocks = max(1, hangover_ms // block_ms)
        self._min_blocks = min_blocks
        self._pending = np.zeros(0, dtype=np.int16)
        self._index = 0  # index of the next block
        self._active = False
        self._run = 0  # consecutive loud blocks while inactive
        self._quiet = 0  # consecutive quiet blocks while active
        self._last_loud_end = 0

    def feed(self, pcm: np.ndarray) -> list[tuple[float, bool]]:
        data = np.concatenate([self._pending, np.asarray(pcm, dtype=np.int16)])
        whole = len(data) // self._block * self._block
        self._pending = data[whole:]
        if whole == 0:
            return []
        blocks = data[:whole].astype(np.float64).reshape(-1, self._block)
        rms = np.sqrt(np.mean(blocks * blocks, axis=1))
        events: list[tuple[float, bool]] = []
        for loud in rms > self._threshold:
            self._step(bool(loud), events)
            self._index += 1
        return events

    def flush(self) -> list[tuple[float, bool]]:
        """Close a segment still open at the end of the audio."""
        if not self._active:
            return []
        self._active = False
        return [(self._last_loud_end / self.rate, False)]

    def _step(self, loud: bool, events: list[tuple[float, bool]]) -> None:
        if self._active:
            if loud:
                self._quiet = 0
                self._last_loud_end = (self._index + 1) * self._block
            else:
                self._quiet += 1
                if self._quiet >= self._hang_blocks:
                    self._active = False
                    events.append((self._last_loud_end / self.rate, False))
            return
        self._run = self._run + 1 if loud else 0
        if self._run >= self._min_blocks:
            self._active = True
            self._quiet = 0
            self._run = 0
            self._last_loud_end = (self._index + 1) * self._block
            start = (self._index + 1 - self._min_blocks) * self._block
            events.append((start / self.rate, True))


def summarise_marks(events: list[TimelineEvent]) -> list[TimelineEvent]:
    """Merge runs of consecutive mark echoes of the same item into one event."""
    out: list[TimelineEvent] = []
    run: list[TimelineEvent] = []
    run_key: tuple[str, bool] | None = None

    def close_run() -> None:
        if not run:
            return
        if len(run) == 1:
            out.append(run[0])
        else:
            item, cleared = run_key or ("", False)
            how = "cleared" if cleared else "played"
            out.append(
                TimelineEvent(
                    run[0].t,
                    "mark_echo",
                    f"{len(run)} marks {how} for {item} until {run[-1].t:.2f}s",
                )
            )
        run.clear()

    for event in events:
        if event.kind != "mark_echo":
            close_run()
            run_key = None
            out.append(event)
            continue
        cleared = event.detail.endswith(CLEARED_SUFFIX)
        name = event.detail.removesuffix(CLEARED_SUFFIX)
        key = (item_of_mark(name), cleared)
        if key != run_key:
            close_run()
            run_key = key
        run.append(event)
    close_run()
    return out


def item_of_mark(name: str) -> str:
    """The item id of a mark named ``f"{seq}:{item_id}"`` (the whole name otherwise)."""
    seq, sep, item = name.partition(":")
    return item if sep and seq.isdigit() else name


def format_timeline(result: CallResult) -> str:
    """A short human-readable timeline, one event per line, seconds with 2 decimals."""
    lines = []
    for event in result.timeline:
        detail = f"  {event.detail}" if event.detail else ""
        lines.append(f"{event.t:7.2f}s  {event.kind}{detail}")
    for clear in result.clears:
        lines.append(
            f"clear at {clear.t:.2f}s: item {clear.item_id} played {clear.played_ms:.0f} ms,"
            f" dropped {clear.dropped_ms:.0f} ms"
        )
    if result.violations:
        lines.append(f"{len(result.violations)} violation(s):")
        lines.extend(f"  {v}" for v in result.violations)
    return "\n".join(lines)
