"""Checks of the API's response envelope ``{"code", "msg", "data"}``."""

from __future__ import annotations

from typing import Any

import httpx


def data(response: httpx.Response, status: int = 200) -> Any:
    """The envelope's data, after checking status and envelope shape."""
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["code"] == (0 if status < 400 else status), body
    return body["data"]


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["code"] == status, body
    assert isinstance(body["msg"], str) and body["msg"], body
    return body
