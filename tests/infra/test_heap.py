"""The start-up heap of `keel api` and `keel worker` (infra.heap)."""

from __future__ import annotations

import gc
import weakref

from infra.heap import freeze_startup_heap


class Node:
    """A container the collector tracks, able to point at itself."""

    me: Node | None = None


def test_start_up_garbage_is_collected_and_what_lives_is_frozen() -> None:
    gc.disable()  # only freeze_startup_heap may collect while the test looks
    try:
        cycle = Node()
        cycle.me = cycle  # garbage only the collector can free
        garbage = weakref.ref(cycle)
        del cycle
        kept = Node()
        kept.me = kept
        assert garbage() is not None

        freeze_startup_heap()

        assert garbage() is None, "start-up garbage would have been frozen for good"
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects()), "a live object is still walked"
    finally:
        gc.unfreeze()
        gc.enable()
