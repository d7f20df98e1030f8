"""Log lines for machines: ``LOG_FORMAT=json`` gives one JSON object per record.

Owns the JSON handler (``python-json-logger`` on the standard ``logging``) and
``CallIdFilter``, which finds the call a message names (every per-call line starts
``call <sid>:`` or ``softphone <sid>:``) and attaches it as ``call_id``, and masks what
must never reach a log: a full phone number or an API key that slipped into a message.
It must not decide what is logged: modules log as ever, with ``logging.getLogger``.
"""

from __future__ import annotations

import logging
import re
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from bridge.privacy import mask_number

_CALL_PREFIX = re.compile(r"^(?:call|softphone) ([A-Za-z0-9_-]{2,64}):")
_CALL_SID = re.compile(r"\b((?:CA|SP)[0-9a-fA-F]{32})\b")
_NUMBER = re.compile(r"(?<![\w+])\+\d{7,15}\b")
_API_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")


class CallIdFilter(logging.Filter):
    """Attach ``call_id`` where the message names a call; mask numbers and keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        found = _CALL_PREFIX.match(message) or _CALL_SID.search(message)
        if found is not None and found.group(1) != "-":
            record.call_id = found.group(1)
        clean = _API_KEY.sub("sk-***", _NUMBER.sub(lambda m: mask_number(m.group()), message))
        record.msg, record.args = clean, None
        return True


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing one JSON object per record: time, level, logger, message,
    ``call_id`` when the message names a call, and the traceback if any."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(CallIdFilter())
    return handler
