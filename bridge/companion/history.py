"""Conversations kept across companion sessions, in the call records store.

A companion session's call id carries its conversation: ``CO`` + 24 hex digits of
SHA-256(userId, conversationId) + 12 random hex digits. Its record (``bridge.store``,
written when the session ends) keeps the turns as the user heard them; a later session
of the same ``userId`` + ``conversationId`` finds them by that prefix and gives the
latest to the model before anything else (``Call.continue_from``). The ids never appear
in the call id or the logs in the clear. Without call records (``RECORDS_PATH=off`` and no
``DATABASE_URL``) each session starts afresh.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from bridge.services import Services
from bridge.store.db import RecordStore

logger = logging.getLogger(__name__)

LEG = "companion"


def conversation_key(user_id: str, conversation_id: str) -> str:
    digest = hashlib.sha256(f"{user_id}\x00{conversation_id}".encode("utf-8", "surrogatepass"))
    return "CO" + digest.hexdigest()[:24]


def call_sid(user_id: str, conversation_id: str) -> str:
    return conversation_key(user_id, conversation_id) + secrets.token_hex(6)


async def earlier_turns(
    services: Services, user_id: str, conversation_id: str, limit: int
) -> list[tuple[str, str]]:
    """The latest ``limit`` turns of this conversation's earlier sessions, oldest first."""
    store = _store_of(services)
    if store is None or limit <= 0:
        return []
    try:
        turns = await store.latest_turns(
            id_prefix=conversation_key(user_id, conversation_id), leg=LEG, limit=limit
        )
    except Exception as exc:  # a store that does not answer costs the context, not the session
        logger.warning("companion: earlier turns unavailable (%s)", type(exc).__name__)
        return []
    return [(turn.role, turn.text) for turn in turns if turn.text]


def _store_of(services: Services) -> RecordStore | None:
    writer = services.records
    if writer is None:
        return None
    sink = getattr(writer.sink, "store", writer.sink)  # the app may wrap it (migrate first)
    return sink if isinstance(sink, RecordStore) else None
