"""A long-lived process's start-up heap and CPython's cyclic garbage collector.

Once ``keel api`` or ``keel worker`` has started, nearly every object it holds
(modules, classes, FastAPI's routes, pydantic's schemas, SQLAlchemy's mappers,
the Temporal client, LangGraph) lives as long as the process. CPython's full
collection still walks all of them, some 300,000 objects, each time it runs: it
paused the API and the worker 250-340 ms at a time under the benchmark's load (see
docs/benchmarks.md, "eighth pass"), stalling every request and run in flight.
``gc.freeze`` moves them out of the collector's sight.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect start-up's garbage, then freeze what is left: later collections walk
    only objects made after this call. A frozen object is never collected, so call
    this once, when start-up is done."""
    gc.collect()
    gc.freeze()
