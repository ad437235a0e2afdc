"""Failed sign-ins per email: after too many in a window, the next ones wait.

Kept in the API process's memory (bounded), so with N replicas an attacker gets at
most N times the allowance; argon2's cost bounds the guessing rate further. Unknown
emails are counted like known ones, so a 429 reveals nothing about which exist.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class FailureThrottle:
    def __init__(self, max_failures: int, window_s: float, max_tracked: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_tracked = max_tracked
        # key -> (failures in the window, when the window started)
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        """Seconds to wait before ``key`` may try again, or None."""
        now = time.monotonic() if now is None else now
        entry = self._failures.get(key)
        if entry is None:
            return None
        count, started = entry
        left = started + self.window_s - now
        if left <= 0:
            del self._failures[key]
            return None
        return left if count >= self.max_failures else None

    def failed(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        count, started = self._failures.pop(key, (0, now))
        if started + self.window_s <= now:
            count, started = 0, now
        self._failures[key] = (count + 1, started)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
