"""Shared state across instances when ``REDIS_URL`` is set; absent, nothing changes.

One :class:`Cluster` per process (``bridge.cluster.node``) holds the Redis link and the
tasks; the modules under it each own one piece of shared state:

- ``link``: the client, key names, instance id, caller hashing, the error boundary;
- ``caps``: ``MAX_CALLS`` and ``MAX_CALLS_PER_CALLER`` across instances, with leases;
- ``registry``: the cluster's live calls (masked numbers only), with leases;
- ``hangup``: remote hang-up over pub/sub, answered through a one-time reply list;
- ``shared_breaker``: the model breaker open everywhere when open anywhere.

Nothing here imports the web layer, ``Services`` or a Call; the app wires it in:

- lifespan: ``cluster = Cluster.from_settings(settings, on_hangup=…)``; when not None,
  ``cluster.attach_breaker(services.breaker)`` then ``await cluster.start()``, and
  ``await cluster.stop()`` at shutdown. ``on_hangup(call_sid, say) -> bool`` is the admin
  API's local hang-up (False when this process has no such live call).
- a call's life (``Services.run_call``, or where the stream starts): ``try_admit(sid,
  party)`` before it runs (refused: ``.reason``), ``register(…)`` once it runs, and
  ``unregister(sid)`` + ``release(sid)`` when it ends. Each is one bounded round trip
  (``op_timeout_s``) and returns at once while Redis is known to be down.
- breaker: read ``SharedBreaker.is_open`` (or ``Services.model_unreachable``, which its
  ``on_change`` now sets) instead of ``ModelBreaker.is_open``, and end calls with
  ``SharedBreaker.call_ended``.
- admin: ``live_calls()`` for other instances' calls, ``request_hangup(sid, say)`` for a
  call this process does not run.
"""

from bridge.cluster.caps import (
    ADMITTED,
    AT_CAPACITY,
    CALLER_AT_CAPACITY,
    REDIS_UNAVAILABLE,
    Admission,
)
from bridge.cluster.hangup import HangupHandler, HangupReply
from bridge.cluster.link import ClusterOptions, redact_url
from bridge.cluster.node import Cluster
from bridge.cluster.registry import LiveCall
from bridge.cluster.shared_breaker import SharedBreaker

__all__ = [
    "ADMITTED",
    "AT_CAPACITY",
    "CALLER_AT_CAPACITY",
    "REDIS_UNAVAILABLE",
    "Admission",
    "Cluster",
    "ClusterOptions",
    "HangupHandler",
    "HangupReply",
    "LiveCall",
    "SharedBreaker",
    "redact_url",
]
