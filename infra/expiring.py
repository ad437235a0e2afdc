"""Values a process remembers for a few seconds instead of reading them again: each is
kept ``ttl_s`` seconds after it was put, and at most ``max_entries`` of them (the oldest
go first). ``ttl_s`` 0 remembers nothing."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    def __init__(
        self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # key: (fresh until, value)

    def get(self, key: K) -> V | None:
        """The value put for ``key``, if it is still fresh."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        fresh_until, value = entry
        if self.clock() >= fresh_until:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (self.clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def drop_where(self, doomed: Callable[[V], bool]) -> None:
        """Forget every value for which ``doomed`` is true."""
        for key in [key for key, (_, value) in self._entries.items() if doomed(value)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
