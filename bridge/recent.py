"""``Recent``: a bounded, insertion-ordered map that forgets its oldest entries.

Pure. What a call remembers per item or per response (dropped items, responses whose
audio is stale, per-item downlinks, confirmed playback of finished items) lives in one of
these, so per-call memory stays flat however long the call. It knows nothing about calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["RECENT_ITEMS", "Recent"]

K = TypeVar("K")
V = TypeVar("V")

# How many items (or responses) a call remembers: far more than are ever in flight at once.
RECENT_ITEMS = 32


class Recent(Generic[K, V]):
    """The latest ``limit`` entries put in; as a set, ``add`` keys with no value."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int = RECENT_ITEMS) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.limit = limit
        self._entries: dict[K, V] = {}

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key`` (as the newest entry if ``key`` is new)."""
        entries = self._entries
        entries[key] = value
        if len(entries) > self.limit:
            del entries[next(iter(entries))]

    def add(self: Recent[K, None], key: K) -> None:
        self.put(key, None)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)
