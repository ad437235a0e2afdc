"""The per-principal request rate limit: a token bucket per API key or user.

Kept in the API process's memory (bounded, least recently seen dropped first), so
checking costs a dictionary lookup and no query on the hot path; with N replicas a
principal gets at most N times the rate. A shared counter in the database would make
every request pay a write for a limit that only has to stop runaway clients.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, per_s: float, burst: int, max_tracked: int = 100_000) -> None:
        self.per_s = per_s
        self.burst = burst
        self.max_tracked = max_tracked
        # principal -> (tokens left, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, principal: str, now: float | None = None) -> float | None:
        """Spend one request of ``principal``'s allowance: None when allowed, else the
        seconds until the next one would be."""
        if self.per_s <= 0:
            return None
        now = time.monotonic() if now is None else now
        tokens, counted = self._buckets.pop(principal, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - counted) * self.per_s)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[principal] = (tokens, now)
        if len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
        return None if allowed else (1 - tokens) / self.per_s
