"""The JSON companion protocol (``/ws/companion``) and its HTTP API: a leg on the Call core."""
