"""Recording usage: one priced row per LLM call and per tool call, written exactly once.

``record_llm_call`` and ``record_tool_call`` insert one ``usage_records`` row keyed by
``usage_key(...)``. The key is unique in the database, so recording the same call
twice (a retried recording, a replayed activity, two processes racing) leaves one
row: the second call returns None and changes nothing. They write through a session
or a plain connection and do not commit; the caller decides (commit right after, or a
connection that commits each statement, so the row is durable before the activity
reports success).

The key carries the Temporal *activity attempt*. A retry of an LLM activity really
calls the model again and the provider charges again, so it must be counted: the new
attempt number makes a new key. What must not be counted twice is the *same* attempt
recorded again, e.g. a recording retried after a lost commit acknowledgement, and
that has the same key. A worker killed after the model answered but before the row
was committed loses that one row (the provider charged, the ledger never heard): the
ledger counts calls it saw answered, never more than were made.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Table, insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from infra.dbtypes import utcnow
from infra.models import UsageRecord
from infra.pricing import Pricing, Tokens

Kind = Literal["llm", "tool"]
# What a usage row is written through: a session, or a plain connection (the worker's).
Writer = AsyncSession | AsyncConnection

MAX_KEY_LENGTH = 255  # usage_records.idempotency_key
MYSQL_DUPLICATE_KEY = 1062


def usage_key(
    execution_id: int,
    node_id: str,
    attempt: int,
    call_index: int | str,
    *,
    kind: Kind = "llm",
    visit: int = 1,
) -> str:
    """The idempotency key of one call: ``llm:<execution>:<node>:<visit>:<call>:<attempt>``.

    ``call_index`` names the call within one visit of the node: an agent's model calls
    are 0, 1, 2...; a tool call the model asked for in model call 2 can be ``"2.0"``,
    ``"2.1"``; a tool node's call is 0. ``visit`` counts how often the node ran in this
    execution (a node inside a bounded loop runs again, and its calls are new calls).
    ``attempt`` is ``activity.info().attempt``: see the module docs for why it is here.
    """
    if attempt < 1 or visit < 1:
        raise ValueError("attempt and visit count from 1")
    key = f"{kind}:{execution_id}:{node_id}:{visit}:{call_index}:{attempt}"
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"usage key longer than {MAX_KEY_LENGTH} characters: {key[:80]}...")
    return key


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


async def record_llm_call(
    writer: Writer,
    *,
    key: str,
    workspace_id: int,
    execution_id: int | None,
    workflow_id: int | None,
    agent_id: int | None,
    node_id: str | None,
    provider: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    latency_ms: float | None = None,
    pricing: Pricing,
    at: datetime | None = None,
) -> UsageRecord | None:
    """Price one answered model call and add it to the ledger, once.

    Token counts are as the provider reports them (OpenAI convention): ``cached_tokens``
    is the part of ``prompt_tokens`` served from cache, ``reasoning_tokens`` the part
    of ``completion_tokens`` spent reasoning. Returns the row written (with
    ``cost_usd``, the unit prices and ``unpriced``), or None when ``key`` was already
    recorded. ``at`` is when the call happened (default now). Does not commit.
    """
    tokens = Tokens(
        _count(prompt_tokens, "prompt_tokens"),
        _count(completion_tokens, "completion_tokens"),
        _count(cached_tokens, "cached_tokens"),
    )
    _count(reasoning_tokens, "reasoning_tokens")
    cost = pricing.cost(tokens, model)
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "execution_id": execution_id,
        "workflow_id": workflow_id,
        "agent_id": agent_id,
        "node_id": node_id,
        "kind": "llm",
        "provider": provider,
        "model": model,
        "tool_name": None,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cached_tokens": cached_tokens,
        "reasoning_tokens": reasoning_tokens,
        "input_usd_per_mtok": cost.price.input,
        "output_usd_per_mtok": cost.price.output,
        "cost_usd": cost.cost_usd,
        "unpriced": cost.unpriced,
        "latency_ms": latency_ms,
        "ok": True,
        "idempotency_key": key,
        "created_at": at or utcnow(),
    }
    return await _insert_once(writer, values)


async def record_tool_call(
    writer: Writer,
    *,
    key: str,
    workspace_id: int,
    execution_id: int | None,
    workflow_id: int | None,
    agent_id: int | None,
    node_id: str | None,
    tool_name: str,
    ok: bool,
    latency_ms: float | None,
    at: datetime | None = None,
) -> UsageRecord | None:
    """Add one tool call (an attempt that reached the tool) to the ledger, once.

    ``agent_id`` is the agent that asked for the call, None for a tool node. Tool
    calls cost nothing in the ledger; they are counted. Returns None for a key already
    recorded. Does not commit.
    """
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "execution_id": execution_id,
        "workflow_id": workflow_id,
        "agent_id": agent_id,
        "node_id": node_id,
        "kind": "tool",
        "provider": None,
        "model": None,
        "tool_name": tool_name,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "input_usd_per_mtok": Decimal(0),
        "output_usd_per_mtok": Decimal(0),
        "cost_usd": Decimal(0),
        "unpriced": False,
        "latency_ms": latency_ms,
        "ok": ok,
        "idempotency_key": key,
        "created_at": at or utcnow(),
    }
    return await _insert_once(writer, values)


def _is_duplicate(exc: IntegrityError) -> bool:
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return bool(args) and args[0] == MYSQL_DUPLICATE_KEY


# The inserts are built once and given their values as parameters: a statement built
# with its values has its cache key derived anew, values and all, for every call.
_USAGE = cast(Table, UsageRecord.__table__)
# SAVEPOINTs are unreliable on pysqlite; SQLite has INSERT ... ON CONFLICT.
_INSERT_ONCE_SQLITE = sqlite_insert(_USAGE).on_conflict_do_nothing(
    index_elements=["idempotency_key"]
)


async def _insert_once(writer: Writer, values: dict[str, Any]) -> UsageRecord | None:
    result: CursorResult[Any]
    dialect = writer.dialect if isinstance(writer, AsyncConnection) else writer.get_bind().dialect
    if dialect.name == "sqlite":
        result = await writer.execute(_INSERT_ONCE_SQLITE, values)  # type: ignore[assignment]
        if result.rowcount == 0:
            return None
    else:
        # MySQL has no ON CONFLICT, and INSERT IGNORE would also turn other errors into
        # warnings; a SAVEPOINT keeps the caller's transaction intact on a duplicate.
        try:
            async with writer.begin_nested():
                result = await writer.execute(insert(_USAGE), values)  # type: ignore[assignment]
        except IntegrityError as exc:
            if _is_duplicate(exc):
                return None
            raise
    key = result.inserted_primary_key
    assert key is not None
    return UsageRecord(id=key[0], **values)
