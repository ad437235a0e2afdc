"""A database that goes away mid-request (MariaDB restarting, found by the chaos run)
is a 503 the client can retry, never a 500; a unique-key race is a 409; other database
errors stay 500s."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from api.errors import install_error_handlers


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def test_a_lost_database_connection_is_a_503_to_retry() -> None:
    lost = OperationalError(
        "SELECT secret FROM t WHERE k = %s",
        ("sk-hidden",),
        Exception("(2013, 'Lost connection to MySQL server')"),
    )
    transport = httpx.ASGITransport(app=_app(lost))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as http:
        response = await http.get("/boom")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["code"] == 503 and "database is unavailable" in body["msg"]
    assert "sk-hidden" not in response.text and "SELECT" not in response.text


async def test_a_unique_key_race_is_a_409() -> None:
    transport = httpx.ASGITransport(app=_app(IntegrityError("INSERT", {}, Exception("dup"))))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as http:
        response = await http.get("/boom")
    assert response.status_code == 409 and response.json()["code"] == 409
    assert "INSERT" not in response.text


async def test_other_database_errors_are_not_dressed_up_as_503() -> None:
    app = _app(DataError("INSERT", {}, Exception("value too long")))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as http:
        with pytest.raises(DataError):
            await http.get("/boom")
