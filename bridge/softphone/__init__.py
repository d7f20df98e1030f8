"""The browser softphone: a Socket.IO leg on the shared Call core, and its web page.

``with_softphone(app, services)`` mounts it in front of the bridge's ASGI app; see
``server`` (admission, limits, handlers), ``leg`` (the Call's phone side), ``protocol``
(the event API, sans-I/O) and ``pages`` (``/softphone``).
"""

from bridge.softphone.server import Softphone, SoftphoneApp, with_softphone

__all__ = ["Softphone", "SoftphoneApp", "with_softphone"]
