"""Histories recorded from real runs replay against today's workflow code.

If a change to ExecutionWorkflow would break runs already in flight (a
non-determinism error), this fails. To add histories from new tests:
``KEEL_RECORD_HISTORIES=1 .venv/bin/pytest tests/engine -k sqlite`` writes them to
tests/histories/; commit the ones worth keeping.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker.main import workflow_runner
from workflows.execution import ExecutionWorkflow

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_histories_are_kept() -> None:
    assert len(HISTORIES) >= 10, "the replay test needs recorded histories"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[ExecutionWorkflow], workflow_runner=workflow_runner(),
                        data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def _input(path: Path) -> dict[str, object]:
    history = json.loads(path.read_text())
    first = history["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = first["input"]["payloads"][0]["data"]
    return dict(json.loads(base64.b64decode(payload)))


def test_histories_cover_continue_as_new_and_reruns() -> None:
    """Among the recorded runs: a run continued as new (it replays its predecessors'
    supersteps through the memo) and a rerun (its memo seeded from a parent)."""
    inputs = [_input(p) for p in HISTORIES]
    assert any(i.get("continued") and int(str(i.get("replay_steps"))) > 0 for i in inputs)
    assert any(i.get("memo") and not i.get("continued") for i in inputs)
