"""The web console at ``/console``: live calls, call history and each call's timeline and
recording, on the admin API (``bridge.admin``) and its bearer token. See ``pages``."""

from bridge.console.pages import console_routes

__all__ = ["console_routes"]
