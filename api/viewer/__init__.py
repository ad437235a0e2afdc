"""Keel's own web pages: the run viewer (``/runs``, ``/runs/{id}``) and the OpenAPI
pages (``/docs``, ``/redoc``), served with their assets from ``static/`` (no CDN)."""

from api.viewer.docs import install_docs
from api.viewer.pages import install_viewer

__all__ = ["install_docs", "install_viewer"]
