"""The API's /metrics: requests by method, route template and status, and what the
request-timing middleware costs a request."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.responses import data

REQUESTS = "keel_http_request_duration_seconds"


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_of(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    method: str,
    route: str,
    status: str,
) -> float:
    labels = tuple(sorted({"method": method, "route": route, "status": status}.items()))
    return samples.get((f"{REQUESTS}_count", labels), 0.0)


async def test_requests_are_counted_by_route_template_and_status(
    owner_client: httpx.AsyncClient,
) -> None:
    before = await scrape(owner_client)
    agent = data(
        await owner_client.post(
            "/api/v1/Agent/", json={"name": "metered", "provider": "fake", "model": "fake-echo"}
        ),
        201,
    )
    for _ in range(3):
        data(await owner_client.get(f"/api/v1/Agent/{agent['id']}"))
    assert (await owner_client.get("/api/v1/Agent/999999")).status_code == 404
    assert (await owner_client.get("/no/such/path/42")).status_code == 404
    after = await scrape(owner_client)

    def grew(method: str, route: str, status: str) -> float:
        return requests_of(after, method, route, status) - requests_of(
            before, method, route, status
        )

    assert grew("POST", "/api/v1/Agent/", "201") == 1
    # The template, never the id: one series however many agents there are.
    assert grew("GET", "/api/v1/Agent/{agent_id}", "200") == 3
    assert grew("GET", "/api/v1/Agent/{agent_id}", "404") == 1
    assert grew("GET", "<unmatched>", "404") == 1
    assert not any("999999" in str(labels) or "/no/such" in str(labels) for _name, labels in after)
    # Every metric the API records is there from the start (zero until it happens).
    names = {name for name, _labels in after}
    for gauge in ("keel_websocket_watchers", "keel_event_feeds"):
        assert gauge in names
    assert "keel_events_delivered_total" in names
    assert "keel_executions_started_total" in names
