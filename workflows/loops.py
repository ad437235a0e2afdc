"""How many LangGraph supersteps a definition may take: derived from its loop bounds.

LangGraph stops a graph after ``recursion_limit`` supersteps. Its default (and the
old ``10 * nodes + 25``) cut loops short: a loop of two nodes with ``max_visits:
100`` died after about 22 turns, inside the workflow. Every loop passes a
condition with ``max_visits`` (publishing refuses unbounded cycles), and all the
passes through all conditions together number at most the sum of their bounds;
between two passes each node runs at most once. So no run that keeps its bounds
takes more than ``nodes * (sum of bounds + 1)`` steps, and a run that exceeds a
bound fails at that condition, naming it, before LangGraph's limit is reached.
"""

from __future__ import annotations

from workflows.definition import ConditionNode, Definition

SLACK = 25


def step_limit(definition: Definition) -> int:
    bounds = sum(n.max_visits or 0 for n in definition.nodes if isinstance(n, ConditionNode))
    return len(definition.nodes) * (bounds + 2) + SLACK
