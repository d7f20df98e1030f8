"""Who may open a session on the bridge's Socket.IO server, whatever the namespace.

One admission for every namespace served there (``/softphone``, ``/chat/v1``, …), so
they cannot drift apart:

* origin: the page's own origin (from the request and ``PUBLIC_URL``) plus those listed in
  ``SOFTPHONE_ALLOWED_ORIGINS`` (never ``*`` unless listed); no ``Origin`` header means
  no browser page is involved and only the token guards;
* ``SOFTPHONE_TOKEN``: from the connect ``auth`` (``token``), the ``token`` query
  parameter or an ``Authorization: Bearer`` header; required with a real OpenAI key.

It raises ``Refused`` (a stable code and a message for people); it never touches a socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.config import Settings
from bridge.guard import connect_allowed
from bridge.services import Services
from bridge.softphone.protocol import Refused, allowed_origin, check_token, origin_of

__all__ = ["admit", "bearer_token", "origin_ok", "with_bearer"]


def same_origins(environ: Mapping[str, Any], settings: Settings) -> list[str]:
    """The origins the request itself comes from (its host, as forwarded, and PUBLIC_URL)."""
    scope = environ.get("asgi.scope", {})
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme"), scope.get("scheme"))
    origins = []
    for host in (environ.get("HTTP_HOST"), environ.get("HTTP_X_FORWARDED_HOST")):
        if host:
            host = host.split(",")[0].strip()
            origins.append(f"{scheme or 'http'}://{host}")
            forwarded = environ.get("HTTP_X_FORWARDED_PROTO")
            if forwarded:
                origins.append(f"{forwarded.split(',')[0].strip()}://{host}")
    if settings.public_url and (public_origin := origin_of(settings.public_url)):
        origins.append(public_origin)
    return origins


def origin_ok(environ: Mapping[str, Any], settings: Settings) -> bool:
    return allowed_origin(
        environ.get("HTTP_ORIGIN"),
        configured=settings.softphone_allowed_origins,
        same_origin=same_origins(environ, settings),
    )


def bearer_token(environ: Mapping[str, Any]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any."""
    header = environ.get("HTTP_AUTHORIZATION")
    if not isinstance(header, str):
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def with_bearer(auth: object, environ: Mapping[str, Any]) -> object:
    """``auth`` with the bearer token as ``token`` when it carries none of its own."""
    token = bearer_token(environ)
    if token is None:
        return auth
    if isinstance(auth, Mapping):
        return auth if auth.get("token") else {**auth, "token": token}
    return {"token": token}


def admit(environ: Mapping[str, Any], token: str, services: Services, *, what: str) -> None:
    """Refuse (``Refused``) a connection while draining, from a foreign origin, from an
    address opening too many (``bridge.guard``), or with a missing or wrong token
    (``token``: from auth, query or bearer, "" when none). ``what`` names it in the log."""
    settings = services.settings
    if services.draining:
        raise Refused("draining", "the server is shutting down; try again shortly")
    if not origin_ok(environ, settings):
        origin = str(environ.get("HTTP_ORIGIN"))[:100]
        raise Refused(
            "origin_not_allowed",
            f"pages from {origin} may not connect here (see SOFTPHONE_ALLOWED_ORIGINS)",
        )
    client = environ.get("asgi.scope", {}).get("client") or ("?",)
    if not connect_allowed(services, str(client[0]), what):
        raise Refused("rate_limited", "too many new connections; try again shortly")
    check_token(token, settings)
