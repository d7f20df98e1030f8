"""``/ws/realtime``: ephemeral Realtime client secrets and speech for browser clients.
``protocol`` is the sans-I/O wire format, ``rest`` the calls to the REST API, ``routes`` the
WebSocket route and its admission."""
