"""Builders for workflow definitions, and views of event lists."""

from __future__ import annotations

from itertools import pairwise
from typing import Any


def chain(*node_ids: str) -> list[dict[str, str]]:
    """Edges START -> each node in turn -> END."""
    path = ["START", *node_ids, "END"]
    return [{"from": a, "to": b} for a, b in pairwise(path)]


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """Each event as (type, node_id): for asserting exact sequences."""
    return [(e["type"], e["node_id"]) for e in events]
