"""The raw Realtime proxy: Socket.IO ``realtime-*`` events relayed to a model session.

``translate`` (beta ⇄ GA, pure), ``rules`` (what clients may send, pure), ``record``
(the session as a call's timeline, pure) and ``namespace`` (the Socket.IO shell).
"""
