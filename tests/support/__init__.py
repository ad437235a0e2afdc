"""What the tests share, in one place: fakes at the edges, factories and waits.

Test modules import from here and never from each other (nor from a conftest).

- ``settings``: ``make_settings`` and ``app_client`` (the real app over ASGI)
- ``responses``: ``data`` / ``error``, the envelope checks
- ``database``: ``dump_database``, every stored row as text
- ``waiting``: ``wait_for``, poll a condition with a deadline
- ``net``: ``free_port`` and a host no resolver is asked about
- ``graphs``: small builders for workflow definitions and event lists
- ``engine``: the whole platform (API on uvicorn, worker, Temporal) for engine tests
- ``fake_http``, ``fake_llm``, ``fake_mcp`` (+ ``mcp_servers/``): the fakes at the edges
"""
