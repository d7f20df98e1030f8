"""Phone numbers as logs and records may show them: masked.

Pure and dependency-free, so that sans-I/O code (``bridge.store.recorder``) and the web
side (``twiml.voice``) mask the same way without pulling in each other's imports.
"""

from __future__ import annotations


def mask_number(number: str) -> str:
    """``+15551231234`` → ``***1234``; SIP URIs keep their host: ``sip:***1234@…``.

    For logs and records: the last four digits tell calls apart and identify no one.
    """
    if not number:
        return "-"
    scheme, sep, rest = number.partition(":")
    if sep and scheme.lower() in ("sip", "sips"):
        user, at, host = rest.partition("@")
        return f"{scheme}:{_mask(user)}{at}{host}"
    return _mask(number)


def _mask(text: str) -> str:
    if len(text) <= 6:
        return "***"
    return f"***{text[-4:]}"
