"""The start-up heap of `keel api` and `keel worker` (infra.heap)."""

from __future__ import annotations

import gc
import weakref

from infra.heap import YOUNG_GENERATION_THRESHOLD, settle_startup_heap


class Node:
    """A container the collector tracks, able to point at itself."""

    me: Node | None = None


def test_start_up_garbage_is_collected_and_what_lives_is_frozen() -> None:
    threshold = gc.get_threshold()
    gc.disable()  # only settle_startup_heap may collect while the test looks
    try:
        cycle = Node()
        cycle.me = cycle  # garbage only the collector can free
        garbage = weakref.ref(cycle)
        del cycle
        kept = Node()
        kept.me = kept
        assert garbage() is not None

        settle_startup_heap()

        assert garbage() is None, "start-up garbage would have been frozen for good"
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects()), "a live object is still walked"
        # The youngest generation waits longer; the older ones keep their ratios.
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *threshold[1:])
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        gc.enable()
