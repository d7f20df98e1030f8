"""Sessions that outlive a dropped Socket.IO connection for a grace period.

Socket.IO clients reconnect by themselves after a network blip or a failed transport
upgrade. A namespace that keeps its sessions in a :class:`Sessions` lets such a client
take its session up again, same call and same model session, instead of starting over:

* a client that wants this picks a resume id at random and sends it (auth or query) each
  time it connects, as Socket.IO clients resend their ``auth`` when they reconnect; the
  namespace registers its new session under it (:meth:`Sessions.add`) and echoes it. A
  connection that comes with the id of a live session, after passing admission like any
  other, is attached to that session (:meth:`Sessions.resume`), and the old connection, if
  the server still thinks it open, is let go;
* when a connection is lost rather than closed (``transport close``, ``ping timeout``,
  ``transport error``; see :func:`resumable`), :meth:`Sessions.lost` parks a session that
  has a resume id:
  its events go nowhere (``on_detach`` is told, to stop the agent's speech nobody hears)
  and, unless it is resumed within ``grace_s``, ``on_expire`` ends it. A client that
  disconnects on purpose, or has no resume id, ends its session at once.

Sessions reach their client only through their :class:`Link`, which follows them from one
connection to the next. Nothing here knows what a session is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Link", "Sessions", "resumable"]

S = TypeVar("S")

# Engine.IO's reasons for a connection that was lost, not closed by either side.
_LOST = frozenset({"transport close", "ping timeout", "transport error"})


def resumable(reason: object) -> bool:
    """Whether a disconnect with this reason may be resumed (the client did not leave)."""
    return str(reason) in _LOST


class Link:
    """The connection a session's events go to now (``sid`` None: none, they are dropped)."""

    def __init__(self, sio: Any, namespace: str, sid: str) -> None:
        self.sio = sio
        self.namespace = namespace
        self.sid: str | None = sid

    async def emit(self, event: str, data: Any) -> None:
        if (sid := self.sid) is not None:
            await self.sio.emit(event, data, to=sid, namespace=self.namespace)

    async def disconnect(self) -> None:
        if (sid := self.sid) is not None:
            await self.sio.disconnect(sid, namespace=self.namespace)

    def backlog(self) -> int:
        """Packets queued in Engine.IO for the client (what a slow reader piles up)."""
        sid = self.sid
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, self.namespace) if sid else None
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        queue = getattr(socket, "queue", None)
        return queue.qsize() if queue is not None else 0


@dataclass(eq=False)
class _Entry(Generic[S]):
    session: S
    link: Link
    resume_id: str | None
    on_detach: Callable[[], None]
    on_expire: Callable[[str], None]
    timer: asyncio.TimerHandle | None = None


class Sessions(Generic[S]):
    """A namespace's sessions: attached ones by connection id, all by resume id."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._by_sid: dict[str, _Entry[S]] = {}  # attached
        self._by_id: dict[str, _Entry[S]] = {}  # resumable, attached or parked
        self._all: list[_Entry[S]] = []

    def add(
        self,
        sid: str,
        session: S,
        link: Link,
        *,
        resume_id: str | None,
        on_detach: Callable[[], None],
        on_expire: Callable[[str], None],
    ) -> None:
        """Track a new session attached to ``sid``, resumable if it has a ``resume_id``.

        ``on_detach``: its connection was lost (it may come back); ``on_expire(reason)``:
        end it. A ``resume_id`` already in use must be checked first (:meth:`known`).
        """
        entry = _Entry(session, link, resume_id, on_detach, on_expire)
        self._by_sid[sid] = entry
        self._all.append(entry)
        if resume_id is not None:
            self._by_id[resume_id] = entry

    def known(self, resume_id: str | None) -> bool:
        """A live session has this resume id (a connection with it resumes that)."""
        return resume_id is not None and resume_id in self._by_id

    def by_sid(self) -> dict[str, S]:
        """The attached sessions by connection id (a copy)."""
        return {sid: entry.session for sid, entry in self._by_sid.items()}

    def get(self, sid: str) -> S | None:
        entry = self._by_sid.get(sid)
        return entry.session if entry is not None else None

    def __len__(self) -> int:
        """Sessions alive, attached or parked (each holds a call and a model session)."""
        return len(self._all)

    @property
    def parked(self) -> int:
        return len(self._all) - len(self._by_sid)

    def resume(self, resume_id: str | None, sid: str) -> tuple[S, str | None] | None:
        """Attach the session ``resume_id`` names to ``sid``: ``(session, old sid)``, the
        old connection (if still attached) to be disconnected; None if there is none."""
        entry = self._by_id.get(resume_id) if resume_id is not None else None
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        old = entry.link.sid
        if old is not None:  # it died unnoticed: what went to it since may be lost too
            self._by_sid.pop(old, None)
            entry.on_detach()
        entry.link.sid = sid
        self._by_sid[sid] = entry
        return entry.session, old

    def lost(self, sid: str, reason: str) -> bool:
        """Connection ``sid`` went away (``reason``): park its session for the grace period,
        or end it now (a deliberate disconnect, or no grace). False if it had none."""
        entry = self._by_sid.pop(sid, None)
        if entry is None:
            return False
        entry.link.sid = None
        if entry.resume_id is None or not resumable(reason) or self.grace_s <= 0:
            entry.on_expire(reason)
            return True
        entry.on_detach()
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(self.grace_s, self._expire, entry, reason)
        return True

    def ended(self, session: S) -> None:
        """The session is over: forget it (its resume id no longer works)."""
        for entry in [e for e in self._all if e.session is session]:
            self._all.remove(entry)
            if entry.resume_id is not None:
                self._by_id.pop(entry.resume_id, None)
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.link.sid is not None:
                self._by_sid.pop(entry.link.sid, None)

    def _expire(self, entry: _Entry[S], reason: str) -> None:
        entry.timer = None
        if entry.link.sid is None and entry in self._all:
            entry.on_expire(f"{reason}, not back within {self.grace_s:g} s")
