"""Raw PCM voice backends: ``/ws/voice`` (and the root path): binary PCM16 both ways,
JSON events beside it. ``protocol`` is the sans-I/O wire format, ``leg`` the Call's shell,
``routes`` the admission and the Starlette route."""
