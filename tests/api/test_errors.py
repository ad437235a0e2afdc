"""The envelope on every error path, the request id, and the body size limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from infra.settings import Settings
from tests.support.logs import remove_stderr_handlers
from tests.support.responses import data, error
from tests.support.settings import app_client

LIMIT = 65_536  # settings.max_request_bytes in the tests


def assert_request_id(response: httpx.Response) -> str:
    request_id = response.headers.get("x-request-id", "")
    assert len(request_id) >= 16, response.headers
    return request_id


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    for raw in (b'{"name": "x",}', b'{"name": ', b"not json at all"):
        response = await client.post(
            "/api/v1/Agent/", content=raw, headers={"content-type": "application/json"}
        )
        body = error(response, 400)
        assert body["msg"].startswith("request body is not valid JSON: ")
        assert "(at character" in body["msg"]
        assert body["data"][0]["type"] == "json_invalid"
        assert_request_id(response)
    assert data(await client.get("/api/v1/Agent/"))["total"] == 0


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    body = error(await client.post("/api/v1/Agent/"), 422)
    assert body["data"] == [{"loc": ["body"], "msg": "Field required", "type": "missing"}]


async def test_json_sent_without_a_json_content_type_is_explained(
    client: httpx.AsyncClient,
) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):  # curl -d
        response = await client.post(
            "/api/v1/Agent/", content=b'{"name": "x"}', headers={"content-type": content_type}
        )
        body = error(response, 422)
        assert body["msg"] == (
            f"send the body as JSON with Content-Type: application/json (got {content_type})"
        )
    data(
        await client.post(
            "/api/v1/Agent/",
            content=b'{"name": "x"}',
            headers={"content-type": "application/json; charset=utf-8"},
        ),
        201,
    )


async def test_nan_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/Workflow/",
        content=b'{"name": "w", "definition": {'
        b'"nodes": [{"id": "t", "type": "tool", "tool_id": 1, '
        b'"arguments": {"limit": -Infinity}}]}}',
        headers={"content-type": "application/json"},
    )
    body = error(response, 422)
    assert body["data"] == [
        {
            "loc": ["body", "definition", "nodes", 0, "arguments", "limit"],
            "msg": "NaN and Infinity are not JSON numbers",
            "type": "json_number",
        }
    ]


async def test_oversized_body_with_content_length_is_413(client: httpx.AsyncClient) -> None:
    payload = {"name": "big", "system_prompt": "x" * LIMIT}
    response = await client.post("/api/v1/Agent/", json=payload)
    body = error(response, 413)
    assert body == {
        "code": 413,
        "data": None,
        "msg": f"request body is larger than the limit of {LIMIT} bytes (KEEL_MAX_REQUEST_BYTES)",
    }
    assert_request_id(response)
    assert data(await client.get("/api/v1/Agent/"))["total"] == 0


async def test_oversized_streamed_body_without_content_length_is_413(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "big", "system_prompt": "'
        for _ in range(10):
            yield b"x" * 8192
        yield b'"}'

    request = client.build_request(
        "POST", "/api/v1/Agent/", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in request.headers
    response = await client.send(request)
    body = error(response, 413)
    assert f"limit of {LIMIT} bytes" in body["msg"] and body["data"] is None
    assert_request_id(response)
    assert data(await client.get("/api/v1/Agent/"))["total"] == 0


async def test_streamed_body_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "streamed", "system_prompt": "'
        for _ in range(7):
            yield b"y" * 8192
        yield b'"}'

    created = data(
        await client.post(
            "/api/v1/Agent/", content=chunks(), headers={"content-type": "application/json"}
        ),
        201,
    )
    assert created["system_prompt"] == "y" * 8192 * 7


async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/Nothing/here")
    body = error(response, 404)
    assert body == {"code": 404, "msg": "no such endpoint: GET /api/v1/Nothing/here", "data": None}
    assert_request_id(response)


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    response = await client.patch("/api/v1/Agent/1", json={})
    body = error(response, 405)
    assert body == {"code": 405, "msg": "PATCH is not allowed on /api/v1/Agent/1", "data": None}
    assert "GET" in response.headers["allow"]
    assert_request_id(response)
    error(await client.delete("/api/v1/Workflow/"), 405)


@pytest.fixture
async def failing_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus one test-only route that fails the way a bug would."""
    app = app_client(settings)

    async def explode() -> dict[str, Any]:
        raise RuntimeError("kaboom: secret internal detail")

    app.app.add_api_route("/api/v1/_test/explode", explode, methods=["GET"])
    async with app as http:
        yield http


async def test_unhandled_error_is_500_envelope_with_request_id(
    failing_client: httpx.AsyncClient,
) -> None:
    response = await failing_client.get("/api/v1/_test/explode")
    body = error(response, 500)
    request_id = assert_request_id(response)
    assert body == {
        "code": 500,
        "msg": "internal error; report this request id to the operator",
        "data": {"request_id": request_id},
    }
    for leak in ("Traceback", "kaboom", "RuntimeError", "explode", ".py"):
        assert leak not in response.text
    # The app keeps serving.
    assert data(await failing_client.get("/api/v1/Agent/"))["total"] == 0


async def test_500_is_logged_with_its_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_client(settings)

    async def explode() -> None:
        raise RuntimeError("kaboom")

    app.app.add_api_route("/explode", explode, methods=["GET"])
    try:
        async with app as http:  # started here so its log handler writes into capsys
            response = await http.get("/explode", headers={"X-Request-ID": "trace-500-abc"})
    finally:
        remove_stderr_handlers()
    assert response.status_code == 500
    assert response.json()["data"] == {"request_id": "trace-500-abc"}
    logged = capsys.readouterr().err
    failure = next(line for line in logged.splitlines() if '"unhandled error"' in line)
    assert '"request_id": "trace-500-abc"' in failure and "kaboom" in failure


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/api/v1/Agent/", headers={"X-Request-ID": "client-id-123"}),
        await client.get("/api/v1/Agent/999", headers={"X-Request-ID": "client-id-123"}),
        await client.post("/api/v1/Agent/", json={}, headers={"X-Request-ID": "client-id-123"}),
    ):
        assert response.headers["x-request-id"] == "client-id-123"
    # Ids that could forge log lines or headers are replaced by our own.
    for unsafe in ("x" * 200, "bad id with spaces", 'quote"inside'):
        response = await client.get("/api/v1/Agent/", headers={"X-Request-ID": unsafe})
        assert response.headers["x-request-id"] != unsafe
        assert assert_request_id(response).isalnum()
    first = assert_request_id(await client.get("/api/v1/Agent/"))
    assert first != assert_request_id(await client.get("/api/v1/Agent/"))


async def test_collection_paths_work_without_the_trailing_slash(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/Agent", json={"name": "no-slash"})
    assert created.status_code == 201, created.text
    listed = await client.get("/api/v1/Agent")
    assert listed.status_code == 200 and listed.json()["data"]["total"] == 1
