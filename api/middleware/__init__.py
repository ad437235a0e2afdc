"""ASGI middleware, one concern a module. Plain ASGI (not BaseHTTPMiddleware), so
WebSockets and streaming pass through untouched and each costs a request little.

From the outside in (``api.main`` adds them in reverse):

- ``collection_paths``: ``/api/v1/Agent`` is served as ``/api/v1/Agent/``;
- ``request_context``: the request id (header and log context), one log line per
  request, and the 500 envelope for an unhandled error;
- ``api.metrics``' request timer: each request by method, route template and status;
- ``body_limit``: a body over ``KEEL_MAX_REQUEST_BYTES`` is a 413 envelope.
"""
