"""Keypad digits and caller silence, sans-I/O: when each has something for the model.

``Keypad`` gathers DTMF digits until ``#``, a count or a pause, and says what the caller
pressed. ``Silence`` measures how long the line has been quiet since the agent's playout
ended and counts the nudges. Both take ``now`` and return decisions; ``bridge.tools.control``
acts on them. They must not do I/O.
"""

from __future__ import annotations

from bridge.agents import Agent


def keypad_text(digits: str) -> str:
    """The user message the model gets for ``digits``."""
    return f"The caller pressed {' '.join(digits)} on the keypad."


class Keypad:
    def __init__(self, agent: Agent) -> None:
        self.enabled = agent.dtmf
        self._max = agent.dtmf_max_digits
        self._pause_s = agent.dtmf_pause_ms / 1000
        self._digits = ""
        self.due: float | None = None  # when the pause ends the entry

    @property
    def pending(self) -> bool:
        return bool(self._digits)

    def press(self, digit: str, now: float) -> str | None:
        """A key; the digits entered so far when this ends the entry, else None."""
        if not self.enabled:
            return None
        if digit != "#":
            self._digits += digit
            if not (self._max and len(self._digits) >= self._max):
                self.due = now + self._pause_s
                return None
        return self.take()

    def poll(self, now: float) -> str | None:
        """The digits, when the pause after the last one has passed."""
        if self.due is not None and now >= self.due:
            return self.take()
        return None

    def take(self) -> str | None:
        digits, self._digits, self.due = self._digits, "", None
        return digits or None


class Silence:
    """Quiet since the agent's playout ended; nudges so far."""

    def __init__(self, agent: Agent) -> None:
        self.timeout_s = agent.silence_timeout_s
        self.max_nudges = agent.silence_max_nudges
        self.nudges = 0
        self._since: float | None = None

    def caller_active(self) -> None:
        """The caller spoke, typed or pressed a key: start counting afresh."""
        self.nudges = 0
        self._since = None

    def busy(self) -> None:
        """Something is being said or awaited: the line is not silent."""
        self._since = None

    def quiet(self, now: float) -> bool:
        """The line is quiet at ``now``: True when it has been quiet for the timeout."""
        if not self.timeout_s:
            return False
        if self._since is None:
            self._since = now
        due = self.due  # the time next_due names, compared as is
        if due is not None and now >= due:
            self._since = None
            self.nudges += 1
            return True
        return False

    @property
    def due(self) -> float | None:
        return None if self._since is None else self._since + self.timeout_s

    @property
    def give_up(self) -> bool:
        """The latest nudge is one past the last allowed: say goodbye instead."""
        return self.nudges > self.max_nudges
