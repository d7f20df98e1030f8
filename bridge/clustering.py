"""The app's side of the cluster (``REDIS_URL``): what each call and the admin API ask it.

Owns the glue between ``Services`` and ``bridge.cluster``: joining at start-up (the shared
breaker attached, the local hang-up handler given) and leaving at shutdown; the voice
webhook's early busy answer; and hanging up a live call of this process, which the admin
API does for its own calls and other instances ask for over Redis. Each call's places and
registry entry are taken and given back by ``Services.run_call``.

Without ``REDIS_URL`` none of it runs (``services.cluster`` is None) and each process keeps
its own caps, breaker and list of live calls, as before. It must not touch the Call's
logic, a leg's wire format or Redis itself (``bridge.cluster`` does).
"""

from __future__ import annotations

import logging
from functools import partial

from bridge.cluster import Cluster, ClusterOptions
from bridge.privacy import mask_number
from bridge.services import Services

logger = logging.getLogger(__name__)

HANGUP_REASON = "ended by an operator"  # a live call hung up through the admin API


async def join_cluster(services: Services) -> Cluster | None:
    """Join the cluster when ``REDIS_URL`` is set (never raises for Redis being down)."""
    settings = services.settings
    lease = settings.cluster_lease_s
    options = ClusterOptions(lease_s=lease, renew_s=lease / 3)
    cluster = Cluster.from_settings(
        settings, on_hangup=partial(hang_up_here, services), options=options
    )
    if cluster is None:
        return None
    services.shared_breaker = cluster.attach_breaker(services.breaker)
    await cluster.start()
    services.cluster = cluster
    return cluster


async def leave_cluster(services: Services) -> None:
    cluster, services.cluster = services.cluster, None
    if cluster is not None:
        await cluster.stop()


async def hang_up_here(services: Services, call_sid: str, say: str | None) -> bool:
    """End a live call of this process (after ``say``, if given); False: none such."""
    for runner in list(services.calls):
        call = runner.call
        if call.call_sid == call_sid and call.closed is None:
            call.control.end(HANGUP_REASON, runner.clock(), say)
            await runner.flush()  # wakes the pacer, which ends the call once it is heard
            return True
    return False


async def webhook_busy(services: Services, caller: str) -> str | None:
    """Why the voice webhook should answer busy at once (the cluster is full), or None.

    Only a first check, so the caller hears busy rather than a stream that closes: the
    places are taken where the call starts (``Services.run_call``), maybe another instance.
    """
    cluster = services.cluster
    if cluster is None:
        return None
    settings = services.settings
    total = await cluster.caps.count()
    if total is not None and total >= settings.max_calls:
        return "the cluster is at MAX_CALLS"
    cap = settings.max_calls_per_caller
    if cap and caller:
        mine = await cluster.caps.count(caller)
        if mine is not None and mine >= cap:
            return f"{mask_number(caller)} is at MAX_CALLS_PER_CALLER in the cluster"
    return None
