"""What a model call reads before it starts, remembered by the worker for a moment.

Every model call checks the budgets that apply to it and reads its agent's stored API
key. Both change rarely, and a busy worker makes many calls of the same agent a
second: reading them took a session and two queries per call, about 4 of the 11 ms
of the model-call activity's own work at one run at a time (docs/benchmarks.md,
fifteenth pass). A worker keeps what it read for ``KEEL_MODEL_CALL_CACHE_S`` seconds
(1 by default), per workspace and agent; so a budget set or changed, or an agent's
key changed, applies to the calls that start after that bound (the same bound as a
revoked credential's on another API process).

What has been spent is never remembered: when a budget applies, every call still sums
the month's usage before it starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.secrets import StoredKey, stored_agent_key
from infra.expiring import Expiring
from infra.ledger import BudgetInScope, budgets_in_scope


class CallReads(NamedTuple):
    budgets: list[BudgetInScope]  # the workspace's and the agent's, if set
    stored_key: StoredKey | None  # None: the agent is gone


class CallReadsCache:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        # (workspace id, agent id) -> what was read
        self._remembered: Expiring[tuple[int, int], CallReads] = Expiring(ttl_s, max_entries, clock)

    async def get(self, workspace_id: int, agent_id: int, base_url: str | None) -> CallReads:
        """The budgets in scope of a call by ``agent_id`` and the agent's stored key, read
        at most ``ttl_s`` seconds ago (two queries in one session when not). A key
        remembered for another base_url than the call's (``base_url``, the run's) is
        read again: the agent may have been repointed since, and a run started after
        that must not be refused for what this worker remembered before it."""
        key = (workspace_id, agent_id)
        remembered = self._remembered.get(key)
        if remembered is not None and (
            remembered.stored_key is None or remembered.stored_key.base_url == base_url
        ):
            return remembered
        async with self.sessions() as session:
            reads = CallReads(
                await budgets_in_scope(session, workspace_id, [agent_id]),
                await stored_agent_key(session, agent_id, workspace_id),
            )
        self._remembered.put(key, reads)
        return reads
