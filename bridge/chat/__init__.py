"""The ``/chat/v1`` Socket.IO voice gateway, for clients written for Bolna-style servers.

A leg on the shared Call core, registered on the softphone's Socket.IO server: see
``gateway`` (admission, handlers, sessions), ``leg`` (the Call's phone side) and
``protocol`` (the event API, sans-I/O).
"""
