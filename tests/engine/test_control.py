"""Cancellation, operator actions in Temporal, reconnecting watchers, and bad input."""

from __future__ import annotations

import websockets
from temporalio.api.enums.v1 import EventType as HistoryEvent

from tests.support.engine import Platform
from tests.support.graphs import chain, kinds
from tests.support.responses import data, error
from workflows.events import EventType
from workflows.execution import HEARTBEAT_TIMEOUT
from workflows.status import ExecutionStatus, NodeStatus


async def slow_run(platform: Platform, delay_s: float = 120) -> dict:
    slow = await platform.agent("slow", metadata={"fake": {"delay_s": delay_s}})
    workflow_id = await platform.workflow(
        {
            "nodes": [{"id": "think", "type": "agent", "agent_id": slow, "input": "x"}],
            "edges": chain("think"),
        }
    )
    execution = await platform.run(workflow_id)
    started, _ = await platform.watch(execution["id"], limit=2)
    assert kinds(started) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "think"),
    ]
    return execution


async def test_cancel_stops_the_running_activity(platform: Platform) -> None:
    execution = await slow_run(platform)
    response = await platform.http.post(f"/api/v1/Execution/{execution['id']}/cancel")
    assert response.status_code == 200, response.text

    final = await platform.wait_status(execution["id"], "cancelled")
    assert final["nodes"][0]["status"] == NodeStatus.CANCELLED
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and events[-1]["type"] == EventType.EXECUTION_CANCELLED

    # The activity itself acknowledged the cancel, within its heartbeat timeout.
    history = await platform.client.get_workflow_handle(
        execution["temporal"]["workflow_id"]
    ).fetch_history()
    times = {e.event_type: e.event_time.ToDatetime() for e in history.events}
    requested = times[HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED]
    acknowledged = times[HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_CANCELED]
    assert acknowledged - requested <= HEARTBEAT_TIMEOUT

    error(await platform.http.post(f"/api/v1/Execution/{execution['id']}/cancel"), 409)


async def test_cancel_from_temporal_is_reported(platform: Platform) -> None:
    execution = await slow_run(platform)
    await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).cancel()
    final = await platform.wait_status(execution["id"], "cancelled")
    assert final["finished_at"] is not None


async def test_terminate_from_temporal_is_reported(platform: Platform) -> None:
    execution = await slow_run(platform)
    await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).terminate(
        reason="operator says stop"
    )
    final = await platform.wait_status(execution["id"], "failed")
    assert final["error"] == "terminated by an operator in Temporal"
    assert final["nodes"][0]["status"] == NodeStatus.FAILED
    events, code = await platform.watch(execution["id"])
    assert code == 1000
    assert kinds(events)[-1] == (EventType.EXECUTION_FAILED, None)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_watcher_sees_terminate_live(platform: Platform) -> None:
    execution = await slow_run(platform)
    async with websockets.connect(
        platform.ws_url(execution["id"], after=2), additional_headers=platform.auth
    ) as ws:
        await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).terminate(
            reason="stop"
        )
        message = await ws.recv()
        assert '"execution.failed"' in str(message)
        await ws.wait_closed()
        assert ws.close_code == 1000


async def test_reconnect_with_after_has_no_gap_and_no_duplicate(platform: Platform) -> None:
    agent = await platform.agent("step")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": f"s{i}", "type": "agent", "agent_id": agent, "input": str(i)}
                for i in range(4)
            ]
            + [{"id": "gate", "type": "human", "prompt": "go?"}],
            "edges": chain("s0", "s1", "gate", "s2", "s3"),
        }
    )
    execution = await platform.run(workflow_id)
    first, _ = await platform.watch(execution["id"], limit=3)
    await platform.wait_status(execution["id"], "waiting")
    data(
        await platform.http.post(
            f"/api/v1/Execution/{execution['id']}/signal",
            json={"node_id": "gate", "action": "approve"},
        )
    )
    rest, code = await platform.watch(execution["id"], after=first[-1]["seq"])
    assert code == 1000
    whole = first + rest
    assert [e["seq"] for e in whole] == list(range(1, len(whole) + 1))
    # The socket closes on the terminal event; the record is complete once the run is.
    await platform.wait_status(execution["id"], "completed")
    stored = data(await platform.http.get(f"/api/v1/Execution/{execution['id']}/events"))
    assert [e["seq"] for e in stored["items"]] == [e["seq"] for e in whole]
    assert kinds(stored["items"]) == kinds(whole)
    page = data(
        await platform.http.get(f"/api/v1/Execution/{execution['id']}/events", params={"after": 4})
    )
    assert page["items"][0]["seq"] == 5 and page["next"] == len(whole)


async def test_many_watchers_share_one_subscription(platform: Platform) -> None:
    import asyncio

    execution = await slow_run(platform, delay_s=1)
    results = await asyncio.gather(*[platform.watch(execution["id"]) for _ in range(20)])
    expected = kinds(results[0][0])
    assert expected[-1] == (EventType.EXECUTION_COMPLETED, None)
    assert all(kinds(events) == expected and code == 1000 for events, code in results)


async def test_websocket_close_codes(platform: Platform) -> None:
    async with websockets.connect(platform.ws_url(999_999), additional_headers=platform.auth) as ws:
        await ws.wait_closed()
        assert ws.close_code == 4404
    agent = await platform.agent("a")
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "a", "type": "agent", "agent_id": agent}], "edges": chain("a")}
    )
    execution = await platform.run(workflow_id)
    for bad in ("-1", "abc", "1.5"):
        async with websockets.connect(
            platform.ws_url(execution["id"], after=bad), additional_headers=platform.auth
        ) as ws:
            await ws.wait_closed()
            assert ws.close_code == 4400


async def test_bad_requests(platform: Platform) -> None:
    agent = await platform.agent("a")
    draft = data(
        await platform.http.post(
            "/api/v1/Workflow/",
            json={
                "name": "unpublished",
                "definition": {
                    "nodes": [{"id": "a", "type": "agent", "agent_id": agent}],
                    "edges": chain("a"),
                },
            },
        ),
        201,
    )
    body = error(
        await platform.http.post("/api/v1/Execution/", json={"workflow_id": draft["id"]}), 409
    )
    assert "publish it first" in body["msg"]
    error(await platform.http.post("/api/v1/Execution/", json={"workflow_id": 424242}), 404)

    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "a", "type": "agent", "agent_id": agent},
                {"id": "gate", "type": "human"},
            ],
            "edges": chain("a", "gate"),
        }
    )
    error(
        await platform.http.post(
            "/api/v1/Execution/", json={"workflow_id": workflow_id, "version": 7}
        ),
        404,
    )
    error(
        await platform.http.post(
            "/api/v1/Execution/", json={"workflow_id": workflow_id, "input": "text"}
        ),
        422,
    )

    pending = data(
        await platform.http.post("/api/v1/Execution/", json={"workflow_id": workflow_id}), 201
    )
    assert pending["status"] == ExecutionStatus.PENDING
    assert pending["temporal"]["workflow_id"] is None
    # Signalling a run that has not started: nothing is waiting.
    error(
        await platform.http.post(
            f"/api/v1/Execution/{pending['id']}/signal",
            json={"node_id": "gate", "action": "approve"},
        ),
        409,
    )
    started = data(await platform.http.post(f"/api/v1/Execution/{pending['id']}/start"))
    assert started["status"] == ExecutionStatus.RUNNING
    platform.started.append(started["temporal"]["workflow_id"])
    error(await platform.http.post(f"/api/v1/Execution/{pending['id']}/start"), 409)

    await platform.wait_status(pending["id"], "waiting")
    body = error(
        await platform.http.post(
            f"/api/v1/Execution/{pending['id']}/signal", json={"node_id": "a", "action": "approve"}
        ),
        409,
    )
    assert "'a' is not waiting" in body["msg"]
    error(
        await platform.http.post(
            f"/api/v1/Execution/{pending['id']}/signal", json={"node_id": "gate", "action": "maybe"}
        ),
        422,
    )
    data(
        await platform.http.post(
            f"/api/v1/Execution/{pending['id']}/signal",
            json={"node_id": "gate", "action": "approve"},
        )
    )
    await platform.wait_status(pending["id"], "completed")
    error(await platform.http.post(f"/api/v1/Execution/{pending['id']}/cancel"), 409)
    error(
        await platform.http.post(
            f"/api/v1/Execution/{pending['id']}/signal",
            json={"node_id": "gate", "action": "approve"},
        ),
        409,
    )
    error(await platform.http.get("/api/v1/Execution/777777"), 404)
    error(
        await platform.http.get(f"/api/v1/Execution/{pending['id']}/events", params={"after": -1}),
        422,
    )


async def test_cancel_pending_execution(platform: Platform) -> None:
    agent = await platform.agent("a")
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "a", "type": "agent", "agent_id": agent}], "edges": chain("a")}
    )
    pending = data(
        await platform.http.post("/api/v1/Execution/", json={"workflow_id": workflow_id}), 201
    )
    cancelled = data(await platform.http.post(f"/api/v1/Execution/{pending['id']}/cancel"))
    assert cancelled["status"] == ExecutionStatus.CANCELLED
    events, code = await platform.watch(pending["id"])
    assert kinds(events) == [(EventType.EXECUTION_CANCELLED, None)] and code == 1000
    error(await platform.http.post(f"/api/v1/Execution/{pending['id']}/start"), 409)


async def test_list_filters(platform: Platform) -> None:
    agent = await platform.agent("a")
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "a", "type": "agent", "agent_id": agent}], "edges": chain("a")}
    )
    done = await platform.run(workflow_id)
    data(await platform.http.post("/api/v1/Execution/", json={"workflow_id": workflow_id}), 201)
    await platform.wait_status(done["id"], "completed")

    async def listed(**params: object) -> list[int]:
        page = data(await platform.http.get("/api/v1/Execution/", params=params))
        return [e["id"] for e in page["items"]]

    assert await listed(status=ExecutionStatus.PENDING) == [done["id"] + 1]
    assert await listed(status=ExecutionStatus.COMPLETED) == [done["id"]]
    assert await listed(workflow_id=workflow_id) == [done["id"] + 1, done["id"]]
    assert await listed(workflow_id=workflow_id + 1) == []
    error(await platform.http.get("/api/v1/Execution/", params={"status": "bogus"}), 422)
