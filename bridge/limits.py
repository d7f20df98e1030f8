"""Per-caller and per-address limits: who may start how much. Sans-I/O (time comes in).

- :class:`CallerCount`: live calls by caller (the webhook's ``From``), so one number
  cannot hold more than ``MAX_CALLS_PER_CALLER`` calls at once (beyond it the webhook
  answers busy). Keys are the raw numbers but never leave this object; logs use
  ``bridge.privacy.mask_number``.
- :class:`ConnectLimiter`: a token bucket per client address for new media streams and
  Socket.IO connections (``CONNECT_RATE_PER_IP`` a second, bursts of
  ``CONNECT_BURST_PER_IP``). The address is the socket peer, or the client named in
  ``X-Forwarded-For`` when the peer is one of ``TRUSTED_PROXIES`` (uvicorn's proxy-header
  handling, set from that list by ``bridge.server``). At most ``MAX_ADDRESSES`` buckets
  are kept: the least recently seen go first, so a spray of addresses cannot grow memory.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

MAX_ADDRESSES = 10_000


class CallerCount:
    """Live calls per caller; an empty caller id (withheld) is never limited."""

    def __init__(self, cap: int) -> None:
        self.cap = cap  # 0: no cap
        self._live: Counter[str] = Counter()

    def full(self, caller: str) -> bool:
        return bool(self.cap and caller and self._live[caller] >= self.cap)

    def add(self, caller: str) -> None:
        if caller:
            self._live[caller] += 1

    def remove(self, caller: str) -> None:
        if caller and self._live[caller] > 0:
            self._live[caller] -= 1
            if not self._live[caller]:
                del self._live[caller]

    def __len__(self) -> int:
        return len(self._live)


@dataclass
class _Bucket:
    tokens: float
    at: float


class ConnectLimiter:
    """Token buckets by client address: ``allow(address, now)`` takes one token."""

    def __init__(self, rate: float, burst: int, max_addresses: int = MAX_ADDRESSES) -> None:
        self.rate = rate  # tokens a second; 0: no limit
        self.burst = burst
        self.max_addresses = max_addresses
        self.refused = 0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, address: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        self._buckets[address] = bucket  # most recently seen last
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1.0:
            self.refused += 1
            return False
        bucket.tokens -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._buckets)
