"""One vocabulary: each status, event type, activity name and error type is spelled once,
in its defining module, and everything else imports it.

An AST scan of every source package and the tests looks at string constants
(docstrings aside). Event types (``node.started``), activity names
(``keel.llm_call``) and error type names (``BudgetExceeded``) are distinctive,
so any constant equal to one is flagged. Status words (``running``) are also
ordinary English, so they are flagged only where they stand for a status: compared
with, assigned to, or passed as something named ``status`` (``x.status == "running"``,
``status="failed"``, ``{"status": "failed"}``, ``row["status"] in ("a", "b")``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows.contracts import ActivityName
from workflows.errors import ErrorType
from workflows.events import EventType
from workflows.status import ExecutionStatus, NodeStatus

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("keel", "api", "worker", "activities", "workflows", "infra", "bench", "tests")
DEFINED_IN = {
    "workflows/events.py": {t.value for t in EventType},
    "workflows/contracts.py": {a.value for a in ActivityName},
    "workflows/errors.py": {e.value for e in ErrorType},
    "workflows/status.py": {s.value for s in ExecutionStatus} | {s.value for s in NodeStatus},
}
DISTINCTIVE = (
    {t.value for t in EventType} | {a.value for a in ActivityName} | {e.value for e in ErrorType}
)
STATUS_WORDS = DEFINED_IN["workflows/status.py"]


def is_status(node: ast.AST) -> bool:
    """An expression that names a status: ``status``, ``x.status``, ``x["status"]``."""
    if isinstance(node, ast.Name):
        return node.id.endswith("status")
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("status")
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "status"
    return False


def docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def status_constants(tree: ast.AST) -> Iterator[ast.Constant]:
    """String constants that stand for a status."""

    def constants(node: ast.AST) -> Iterator[ast.Constant]:
        if isinstance(node, ast.Constant):
            yield node
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            for item in node.elts:
                yield from constants(item)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(map(is_status, [node.left, *node.comparators])):
            for side in [node.left, *node.comparators]:
                yield from constants(side)
        elif isinstance(node, ast.Assign) and any(map(is_status, node.targets)):
            yield from constants(node.value)
        elif isinstance(node, ast.AnnAssign) and is_status(node.target) and node.value:
            yield from constants(node.value)
        elif isinstance(node, ast.keyword) and node.arg and node.arg.endswith("status"):
            yield from constants(node.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "status":
                    yield from constants(value)


def repeated_literals(path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    own = DEFINED_IN.get(relative, set())
    tree = ast.parse(path.read_text(), relative)
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and id(node) not in skip
            and node.value in DISTINCTIVE - own
        ):
            found.append(f"{relative}:{node.lineno}: {node.value!r}")
    for node in status_constants(tree):
        if node.value in STATUS_WORDS - own:
            found.append(f"{relative}:{node.lineno}: status {node.value!r}")
    return found


SOURCES = sorted(p for package in SCANNED for p in (ROOT / package).rglob("*.py"))


def test_every_word_has_one_defining_module() -> None:
    assert sum(map(len, DEFINED_IN.values())) == len(DISTINCTIVE) + len(STATUS_WORDS)


@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_no_vocabulary_literal_outside_its_module(path: Path) -> None:
    assert repeated_literals(path) == []
