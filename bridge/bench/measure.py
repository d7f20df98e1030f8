"""What a lean load-generator caller measures (``bridge.bench.load``), and how its figures
travel to the parent process (``bridge.bench.main``) as JSON.

``ClientStats``, reset when the parent opens the window, counts:

* downlink underruns: the far end ran dry *inside* an assistant item, i.e. a chunk of
  the same item (known from the mark that follows it) arrived after the previous audio
  had finished playing. Each such gap is counted, and so are the 20 ms frames of silence
  it put into the agent's speech (``late_frames``). ``headroom`` is how much audio the
  far end still had queued when a mid-item chunk arrived: how close it came to a gap.
* its own pacing: how late each caller frame left this process (``send_lag``); frames
  more than 20 ms late are the generator's fault, not the bridge's (``send_late``).
* clears, marks, messages Twilio would reject, this process's event-loop lag.
* calls that could not be set up, and calls the server closed before the caller hung up.

``FarEndClock`` is Twilio's outbound playback reduced to a clock; ``hist_*`` carry a
``bridge.metrics.Histogram`` across the process boundary. No sockets, no clock of its own.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.metrics import Histogram
from bridge.sim.caller import FRAME_S
from bridge.sim.result import RATE, item_of_mark

GAP_TOLERANCE_S = 0.0005
BURST_S = 0.002


def hist_dump(h: Histogram) -> dict[str, Any]:
    return {"counts": h.counts, "n": h.n, "total": h.total, "max": h.max}


def hist_load(d: dict[str, Any]) -> Histogram:
    return Histogram(list(d["counts"]), d["n"], d["total"], d["max"])


def hist_merge(hs: list[Histogram]) -> Histogram:
    out = Histogram()
    for h in hs:
        out.counts = [a + b for a, b in zip(out.counts, h.counts, strict=True)]
        out.n += h.n
        out.total += h.total
        out.max = max(out.max, h.max)
    return out


@dataclass
class ClientStats:
    frames_sent: int = 0
    send_late: int = 0
    media_in: int = 0
    marks_in: int = 0
    marks_echoed: int = 0
    clears: int = 0
    underruns: int = 0
    late_frames: int = 0
    violations: int = 0
    send_lag: Histogram = field(default_factory=Histogram)
    headroom: Histogram = field(default_factory=Histogram)
    loop_lag: Histogram = field(default_factory=Histogram)

    def dump(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("send_lag", "headroom", "loop_lag"):
            out[key] = hist_dump(getattr(self, key))
        return out


class FarEndClock:
    """Twilio's outbound playback reduced to a clock: when the queued audio runs out,
    when each queued mark is reached, and whether a chunk arrived after a gap mid-item."""

    __slots__ = ("_gap", "_headroom", "_last_media", "free_at", "last_item", "marks")

    def __init__(self) -> None:
        self.free_at = -math.inf
        self._last_media = -math.inf
        self.marks: deque[tuple[float, str]] = deque()
        self.last_item: str | None = None
        self._gap = 0.0
        self._headroom: float | None = None

    def media(self, size: int, now: float) -> None:
        if self.free_at >= now:
            # Headroom is what was left when the bridge sent more: chunks sent in one burst
            # with the previous one (a new utterance's first 160 ms) say nothing about it.
            burst = now - self._last_media < BURST_S
            self._gap, self._headroom = 0.0, None if burst else self.free_at - now
        else:
            self._gap, self._headroom = now - self.free_at, 0.0
        self._last_media = now
        self.free_at = max(now, self.free_at) + size / RATE

    def mark(self, name: str, stats: ClientStats) -> None:
        item = item_of_mark(name)
        if item == self.last_item:
            if self._headroom is not None:
                stats.headroom.add(self._headroom * 1000)
            if self._gap > GAP_TOLERANCE_S:
                stats.underruns += 1
                stats.late_frames += math.ceil(self._gap / FRAME_S)
        self.last_item = item
        self._headroom, self._gap = None, 0.0
        self.marks.append((self.free_at, name))

    def due_marks(self, now: float) -> list[str]:
        out = []
        while self.marks and self.marks[0][0] <= now:
            out.append(self.marks.popleft()[1])
        return out

    def clear(self, now: float) -> list[str]:
        names = [name for _, name in self.marks]
        self.marks.clear()
        self.free_at = now
        self.last_item = None
        self._headroom, self._gap = None, 0.0
        return names
