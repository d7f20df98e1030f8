"""The companion protocol's live sessions and figures, as the HTTP API shows them.

Owns the per-process registry (``CompanionSessions``): open connections, live sessions by
client id, how many a ``userId`` has (the per-user cap), and the running figures behind
``/api/realtime/metrics``; and ``RateWindow``, the per-client message limit. Sans-I/O: the
shell passes the time in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

WINDOW_S = 60.0


@dataclass
class LiveSession:
    client_id: str
    user_id: str
    conversation_id: str
    started_at: datetime  # wall clock, UTC
    started: float  # monotonic
    last_activity: float  # monotonic
    session_id: str | None = None  # the call's id, once started
    turns: int = 0  # final transcripts, both sides

    def view(self, now: float, wall_now: datetime) -> dict[str, Any]:
        ago = max(now - self.last_activity, 0.0)
        return {
            "clientId": self.client_id,
            "sessionId": self.session_id,
            "userId": self.user_id,
            "conversationId": self.conversation_id,
            "startedAt": self.started_at.isoformat(),
            "lastActivityAt": datetime.fromtimestamp(
                wall_now.timestamp() - ago, wall_now.tzinfo
            ).isoformat(),
            "idleSeconds": round(ago, 1),
            "turns": self.turns,
        }


@dataclass
class CompanionSessions:
    max_per_user: int
    connections: int = 0
    live: dict[str, LiveSession] = field(default_factory=dict)  # by client id
    created: int = 0
    ended: int = 0
    failed: int = 0  # ended abnormally (model unreachable, internal error)
    refused: int = 0  # start_realtime refused (limit, breaker)
    duration_total_s: float = 0.0
    audio_in_bytes: int = 0  # PCM16 24 kHz from clients
    audio_out_bytes: int = 0  # PCM16 24 kHz to clients

    def of_user(self, user_id: str) -> int:
        return sum(1 for s in self.live.values() if s.user_id == user_id)

    def user_full(self, user_id: str) -> bool:
        return self.of_user(user_id) >= self.max_per_user

    def started(self, session: LiveSession) -> None:
        self.live[session.client_id] = session
        self.created += 1

    def ended_(self, client_id: str, now: float, *, normal: bool) -> None:
        session = self.live.pop(client_id, None)
        if session is None:
            return
        self.ended += 1
        self.duration_total_s += max(now - session.started, 0.0)
        if not normal:
            self.failed += 1

    def figures(self) -> dict[str, Any]:
        attempts = self.created + self.refused
        return {
            "sessionsCreated": self.created,
            "activeSessions": len(self.live),
            "sessionsEnded": self.ended,
            "averageDurationSeconds": round(self.duration_total_s / self.ended, 3)
            if self.ended
            else 0.0,
            "errorRate": round((self.failed + self.refused) / attempts, 4) if attempts else 0.0,
            "refused": self.refused,
            "failed": self.failed,
            "audioProcessed": {
                "inputSeconds": round(self.audio_in_bytes / 48000, 3),
                "outputSeconds": round(self.audio_out_bytes / 48000, 3),
            },
        }


class RateWindow:
    """At most ``limit`` events in any ``WINDOW_S`` seconds (a sliding window)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque[float] = deque()
        self.over = 0  # events refused in a row

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= WINDOW_S:
            self._times.popleft()
        if len(self._times) >= self.limit:
            self.over += 1
            return False
        self._times.append(now)
        self.over = 0
        return True


class AudioPace:
    """Caller audio at most at real time, after a ``burst_ms`` allowance."""

    def __init__(self, burst_ms: float = 2000.0) -> None:
        self.burst_ms = burst_ms
        self._start: float | None = None
        self._ms = 0.0

    def allow(self, pcm_bytes: int, now: float) -> bool:
        if self._start is None:
            self._start = now
        ms = pcm_bytes / 48  # PCM16 24 kHz
        if self._ms + ms > (now - self._start) * 1000 + self.burst_ms:
            return False
        self._ms += ms
        return True
