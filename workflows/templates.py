"""Templates and conditions, evaluated inside the workflow: pure data, no code.

A template is text with ``{{ path }}`` placeholders, where ``path`` is a dotted
lookup into the run's context (``input.topic``, ``nodes.research.output``, a
list index such as ``nodes.search.output.items.0``). Nothing else is allowed:
no expressions, no calls, no attribute access, so a user's template can never
execute code or reach past the data. Conditions are likewise data: a path, an
operator and a value.
"""

from __future__ import annotations

import json
import re
from typing import Any

from workflows.definition import Predicate

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
WHOLE = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}\s*$")
_MISSING = object()


def lookup(context: Any, path: str) -> Any:
    """The value at dotted ``path``, or a private MISSING marker."""
    current = context
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _as_text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_text(template: str, context: dict[str, Any]) -> str:
    """Fill every placeholder; missing values render as empty text."""
    return PLACEHOLDER.sub(lambda m: _as_text(lookup(context, m.group(1))), template)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render tool arguments: a string that is one placeholder keeps the value's type."""
    if isinstance(value, str):
        whole = WHOLE.match(value)
        if whole:
            found = lookup(context, whole.group(1))
            return None if found is _MISSING else found
        return render_text(value, context)
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "gt":
            return bool(left > right)
        if op == "gte":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False  # values that cannot be ordered (text vs number) do not match


def matches(predicate: Predicate, context: dict[str, Any]) -> bool:
    found = lookup(context, predicate.path)
    op = predicate.op
    if op == "exists":
        present = found is not _MISSING and found is not None
        return present if predicate.value in (None, True) else not present
    if found is _MISSING:
        return op == "ne"
    if op == "eq":
        return bool(found == predicate.value)
    if op == "ne":
        return bool(found != predicate.value)
    if op in ("in", "contains"):
        container, item = (predicate.value, found) if op == "in" else (found, predicate.value)
        try:
            return isinstance(container, list | str | dict) and item in container
        except TypeError:
            return False  # e.g. a number looked up in text
    return _compare(op, found, predicate.value)
