"""Imports point one way (docs/architecture.md, "The house"): a wrong-way import fails here.

Every module of Keel's packages is parsed (not imported) and each import of one
of our packages is checked against the table: what a layer may import, besides
itself. ``workflows`` imports only itself; ``infra`` nothing of ours; the settings
nothing of ours at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("keel", "api", "worker", "activities", "workflows", "infra")
MAY_IMPORT = {
    "keel": {"api", "worker", "infra", "workflows"},
    "api": {"workflows", "infra"},
    "worker": {"workflows", "activities", "infra"},
    "activities": {"workflows", "infra"},
    "workflows": set(),
    "infra": set(),
}
# Modules held to a narrower rule than their package's: the settings are read by every
# process before anything else, so they import no module of ours (no domain module).
MODULE_MAY_IMPORT = {
    # Settings know no domain module; the private-file helper makes the development key.
    "infra/settings.py": {"infra.security.files"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a module, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend([(node.lineno, node.module)])
    return found


def wrong_way_imports(package: str) -> list[str]:
    allowed = MAY_IMPORT[package] | {package}
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in OURS and top not in allowed:
                problems.append(
                    f"{path.relative_to(ROOT)}:{line} imports {module} "
                    f"({package} may import only {sorted(allowed)})"
                )
    return problems


def test_the_table_covers_every_package() -> None:
    assert set(MAY_IMPORT) == set(OURS)
    assert all((ROOT / package / "__init__.py").exists() for package in OURS)


@pytest.mark.parametrize("package", OURS)
def test_imports_point_one_way(package: str) -> None:
    assert wrong_way_imports(package) == []


@pytest.mark.parametrize("module", sorted(MODULE_MAY_IMPORT))
def test_narrower_rules(module: str) -> None:
    ours = [
        f"{module}:{line} imports {name}"
        for line, name in imports_of(ROOT / module)
        if name.split(".")[0] in OURS and name not in MODULE_MAY_IMPORT[module]
    ]
    assert ours == []


def test_relative_imports_are_not_used() -> None:
    # They would slip past the table above.
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in OURS
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert relative == []
