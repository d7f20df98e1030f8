"""Work that runs on its own task while its owner goes on, kept until it is done.

The event loop holds a task only weakly: one that nobody keeps may be collected before it
finishes. An owner keeps its background tasks in a set (to wait for them or cancel them
when it stops); ``spawn`` adds a new task there and takes it out once it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["spawn"]

T = TypeVar("T")


def spawn(
    tasks: set[asyncio.Task[T]], work: Coroutine[Any, Any, T], name: str | None = None
) -> asyncio.Task[T]:
    """Run ``work`` on a task of its own, held in ``tasks`` until it is done."""
    task = asyncio.create_task(work, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task
