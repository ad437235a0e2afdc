from __future__ import annotations

import httpx

CONTRACT = {
    "/api/v1/Agent/": {"get", "post"},
    "/api/v1/Agent/{agent_id}": {"get", "put", "delete"},
    "/api/v1/Tool/": {"get", "post"},
    "/api/v1/Tool/{tool_id}": {"get", "put", "delete"},
    "/api/v1/Workflow/": {"get", "post"},
    "/api/v1/Workflow/{workflow_id}": {"get", "put", "delete"},
    "/api/v1/Workflow/{workflow_id}/publish": {"post"},
    "/api/v1/Workflow/{workflow_id}/versions": {"get"},
    "/api/v1/Workflow/{workflow_id}/versions/{version}": {"get"},
    "/health": {"get"},
}


async def test_openapi_lists_every_contract_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "Keel"
    for path, methods in CONTRACT.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, set(spec["paths"][path]))
    assert spec["paths"]["/api/v1/Agent/"]["post"]["responses"].keys() >= {"201", "409", "422"}
    assert "503" in spec["paths"]["/health"]["get"]["responses"]


async def test_openapi_documents_errors_as_the_envelope(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in CONTRACT:
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in spec["paths"][path].items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (
                        path,
                        method,
                        status,
                    )
    assert spec["components"]["schemas"]["ErrorEnvelope"]["required"] == ["code", "msg"]
    assert "HTTPValidationError" not in str(
        {p: spec["paths"][p] for p in CONTRACT if p.startswith("/api/v1/")}
    )


async def test_docs_and_redoc_serve_html(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in response.text
