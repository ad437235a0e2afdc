"""Each request's database session is given back once the request is answered, whatever
the answer: the request-context middleware closes it, not a ``yield`` dependency."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.support.responses import data
from tests.support.settings import app_client

URL = "/api/v1/Agent/"


async def test_every_answer_gives_its_connection_back(settings: Settings, owner_key: str) -> None:
    client = app_client(settings, owner_key)
    async with client as http:
        engine: AsyncEngine = client.app.state.engine
        created = data(await http.post(URL, json={"name": "kept"}), 201)
        doomed = data(await http.post(URL, json={"name": "doomed"}), 201)
        answers = [
            await http.get(f"{URL}{created['id']}"),  # a read
            await http.put(f"{URL}{created['id']}", json={"name": "renamed"}),  # a write
            await http.get(f"{URL}999999"),  # 404 from the route
            await http.get(URL, headers={"Authorization": ""}),  # 401 before any query
            await http.get(URL, headers={"Authorization": "Bearer keel_not-a-real-key-at-all"}),
            await http.post(URL, json={"name": ""}),  # 422 from validation
            await http.delete(f"{URL}{doomed['id']}"),  # a delete
            await http.get(f"{URL}{doomed['id']}"),  # gone
        ]
        assert [a.status_code for a in answers] == [200, 200, 404, 401, 401, 422, 200, 404]
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        # The write was committed, not lost with the session.
        assert data(await http.get(f"{URL}{created['id']}"))["name"] == "renamed"
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
