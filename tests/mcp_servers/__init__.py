"""MCP servers the tests start: a stdio one run as a subprocess (``stdio_server.py``)."""
