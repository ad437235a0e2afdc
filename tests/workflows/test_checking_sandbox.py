"""The checking sandbox (worker.main.checking_runner) sees every call our workflow code
makes. ``keel worker`` runs workflows outside the sandbox; the workflow tests and the
replay test run them inside it, so this is where a call into the clock, randomness or
I/O from workflow code gets caught. A module the sandbox passes through is imported
outside it, and its calls go unchecked: so none of ours may be passed through, by the
runner's list or by an ``imports_passed_through`` block in our workflow modules."""

from __future__ import annotations

from pathlib import Path

from tests.test_layers import OURS
from worker.main import checking_runner

ROOT = Path(__file__).resolve().parents[2]


def test_the_checking_sandbox_passes_none_of_our_modules_through() -> None:
    passed = {name.split(".")[0] for name in checking_runner().restrictions.passthrough_modules}
    assert passed.isdisjoint(OURS), passed & set(OURS)


def test_workflow_modules_pass_nothing_through_themselves() -> None:
    modules = sorted((ROOT / "workflows").glob("*.py"))
    assert modules
    passing = [p.name for p in modules if "imports_passed_through" in p.read_text()]
    assert passing == []
