"""The model's responses as one call sees them, sans-I/O: which is in flight, what is stale.

Owns, for the Call: the response the model is generating (its id, whether all its audio is
here), the items each response made, which responses are stale (their further audio and
items are dropped: cut off by a barge-in, or of a session that ended), whether a
``response.create`` was sent and not created yet, and whether a response is owed once the
current one is done (typed input or an unconfirmed barge-in that must not collide with the
response in flight: ``conversation_already_has_active_response``).

That error can also answer a request made while nothing was in flight: the server had just
started a response of its own (its VAD heard the caller) and our request crossed its
``response.created`` on the wire. That is a race, not a mistake. The model is answering the
caller either way; only a request that answers typed input is owed again after it.

It must not build model events, touch the playout or decide barge-in policy
(``bridge.call`` does all three); it answers the questions those decisions need.
"""

from __future__ import annotations

from typing import Literal

from bridge.ai.events import ACTIVE_RESPONSE
from bridge.recent import Recent

__all__ = ["Owed", "Responses"]

# Why a response is owed: typed input to answer, or the agent to carry on after a barge-in
# the model never heard.
Owed = Literal["answer", "carry_on"]


class Responses:
    def __init__(self) -> None:
        self.current: str | None = None  # the response being generated, if any
        self.audio_done = False  # ...and whether all its audio is here
        self.owed: Owed | None = None  # respond again once the current one is done
        self.create_sent = False  # a response asked for and not created yet
        self._asked: Recent[str, bool] = Recent()  # our requests' event ids: answer typing?
        self._items: dict[str, list[str]] = {}
        self._stale: Recent[str, None] = Recent()

    @property
    def active(self) -> bool:
        return self.current is not None

    @property
    def finishing(self) -> bool:
        """A response is about to end or to start: asking for another now would collide.

        One whose audio is all here is not cancelled but is not done either; one asked for
        is not created yet."""
        return (self.current is not None and self.audio_done) or self.create_sent

    @property
    def cancellable(self) -> str | None:
        """The response an explicit interrupt may cancel: in flight, audio still coming. A
        response whose audio is all here is finishing: cancelling it would race its
        ``response.done`` and earn a "no active response" error."""
        return self.current if self.current is not None and not self.audio_done else None

    def stale(self, response_id: str) -> bool:
        return response_id in self._stale

    # -- what the model says ----------------------------------------------------------

    def asked(self, event_id: str, *, answer: bool) -> None:
        """A ``response.create`` went out (``answer``: it answers typed input)."""
        if self.current is None and not self.create_sent:  # else a refusal is our mistake
            self._asked.put(event_id, answer)
        self.create_sent = True

    def owe(self, why: Owed) -> None:
        """Respond once the current response is done (an answer outranks carrying on)."""
        if self.owed != "answer":
            self.owed = why

    def created(self, response_id: str) -> None:
        self.create_sent = False
        self.current = response_id
        self.audio_done = False
        self._items.setdefault(response_id, [])

    def refused(self, code: str | None, event_id: str | None) -> bool:
        """An ``error``: perhaps the model refused what we asked for. True when it refused
        a request of ours for a response the server had just started itself (a race)."""
        self.create_sent = False
        if code != ACTIVE_RESPONSE or event_id is None or event_id not in self._asked:
            return False
        if self._asked.get(event_id):  # typed input the server's response may not cover
            self.owe("answer")
        return True

    def all_audio(self, response_id: str) -> None:
        if response_id == self.current:
            self.audio_done = True

    def item_added(self, response_id: str, item_id: str) -> bool:
        """An output item of ``response_id``; False when the response is stale (drop it)."""
        if response_id in self._stale:
            return False
        self._items.setdefault(response_id, []).append(item_id)
        return True

    def done(self, response_id: str) -> Owed | None:
        """``response.done``; whether a response is owed now, and why."""
        self._items.pop(response_id, None)
        if self.current != response_id:
            return None
        self.current = None
        owed, self.owed = self.owed, None
        return owed

    # -- what the call does to them ----------------------------------------------------

    def cut(self) -> list[str]:
        """Everything of the response in flight is stale, including items not seen yet;
        the items it made so far (to drop)."""
        if self.current is None:
            return []
        self._stale.add(self.current)
        return list(self._items.get(self.current, ()))

    def lost(self) -> None:
        """The model session ended: what was in flight is stale, nothing is owed."""
        if self.current is not None:
            self._stale.add(self.current)
        self.current = None
        self.audio_done = False
        self._items.clear()
        self.owed = None
        self.create_sent = False
