"""Histories recorded from real runs replay against today's workflow code.

If a change to ExecutionWorkflow would break runs already in flight (a
non-determinism error), this fails. To add histories from new tests:
``KEEL_RECORD_HISTORIES=1 .venv/bin/pytest tests/engine -k sqlite`` writes them to
tests/histories/; commit the ones worth keeping.

tests/histories/nondeterministic/ holds known-bad histories that must fail replay,
so the test cannot pass by replaying nothing. Each is test_linear_graph-1.json with
one field edited: ``activity_id_changed`` has the second model call scheduled as
``write/2/llm/0`` instead of ``write/1/llm/0``; ``activity_name_changed`` has the
first one scheduled as ``keel.call_tool`` instead of ``keel.llm_call``.

Each history replays twice: as ``keel worker`` runs workflows (outside the sandbox),
and in the checking sandbox, where a call into the clock, randomness or I/O from any
of our workflow modules fails the replay.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, WorkflowRunner
from temporalio.workflow import NondeterminismError

from infra.temporal import data_converter
from worker.main import checking_runner, workflow_runner
from workflows.execution import ExecutionWorkflow

HISTORY_DIR = Path(__file__).resolve().parents[1] / "histories"
HISTORIES = sorted(HISTORY_DIR.glob("*.json"))
BAD_HISTORIES = sorted((HISTORY_DIR / "nondeterministic").glob("*.json"))


RUNNERS = {"as-keel-worker-runs": workflow_runner, "checking-sandbox": checking_runner}


def replayer(runner: WorkflowRunner) -> Replayer:
    return Replayer(
        workflows=[ExecutionWorkflow],
        workflow_runner=runner,
        data_converter=data_converter,
    )


def history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))


def test_histories_are_kept() -> None:
    assert len(HISTORIES) >= 10, "the replay test needs recorded histories"


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path, runner: str) -> None:
    result = await replayer(RUNNERS[runner]()).replay_workflow(
        history(path), raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def _input(path: Path) -> dict[str, object]:
    history = json.loads(path.read_text())
    first = history["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = first["input"]["payloads"][0]["data"]
    return dict(json.loads(base64.b64decode(payload)))


def test_histories_cover_continue_as_new_and_reruns() -> None:
    """Among the recorded runs: a run continued as new (it resumes the graph where the
    previous run stopped) and a rerun (its memo seeded from a parent)."""
    inputs = [_input(p) for p in HISTORIES]
    assert any(i.get("resume") for i in inputs)
    assert any(i.get("memo") and not i.get("resume") for i in inputs)


def test_bad_histories_are_kept() -> None:
    assert [p.stem for p in BAD_HISTORIES] == sorted(MISMATCH)


MISMATCH = {
    "activity_id_changed": "Activity id of scheduled event 'write/2/llm/0'",
    "activity_name_changed": "Activity type of scheduled event 'keel.call_tool'",
}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("path", BAD_HISTORIES, ids=[p.stem for p in BAD_HISTORIES])
async def test_a_history_the_code_does_not_match_fails_replay(path: Path, runner: str) -> None:
    with pytest.raises(NondeterminismError, match=MISMATCH[path.stem]):
        await replayer(RUNNERS[runner]()).replay_workflow(history(path))
