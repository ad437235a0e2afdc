"""A long-lived process's start-up heap and CPython's cyclic garbage collector.

Once ``keel api`` or ``keel worker`` has started, nearly every object it holds
(modules, classes, FastAPI's routes, pydantic's schemas, SQLAlchemy's mappers,
the Temporal client, LangGraph) lives as long as the process. CPython's full
collection still walks all of them, some 300,000 objects, each time it runs: it
paused the API and the worker 250-340 ms at a time under the benchmark's load (see
docs/benchmarks.md, "eighth pass"), stalling every request and run in flight.
``gc.freeze`` moves them out of the collector's sight.

What a server makes after that is mostly the work in flight: each request or task
holds its objects until it ends, then frees them by reference counting. CPython
collects its youngest generation every 700 new objects, a threshold made for scripts;
a server crosses it while every one of those objects is still in use, so a collection
walks them, frees nothing and moves them on to be walked again in the next
generation. Under 50 clients reading `GET /Agent/{id}` the API ran 1,433 collections
that freed 173 objects in all: 3% of its CPU, about 40 us a request (see
docs/benchmarks.md, "twentieth pass").
"""

from __future__ import annotations

import gc

# New objects (net of those freed) before the youngest generation is collected. The
# requests or tasks in flight hold a few thousand objects at once (the API under that
# load crossed 2,000 several times a second, 4,000 less than once a second); cyclic
# garbage still goes within this many allocations, and the older generations keep
# CPython's ratios to this one.
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_startup_heap() -> None:
    """Collect start-up's garbage, freeze what is left (later collections walk only
    objects made after this call), and collect the youngest generation every
    ``YOUNG_GENERATION_THRESHOLD`` new objects. A frozen object is never collected, so
    call this once, when start-up is done."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
