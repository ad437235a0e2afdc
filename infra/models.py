"""The app database. Alembic migrations (infra/migrations) create it; keep them in step.

Every resource carries ``workspace_id``. The default workspace (id 1) is made by the
first migration; people (users) act in workspaces through memberships, services
through API keys.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from infra.dbtypes import UTCDateTime, utcnow
from infra.usd import USD_TYPE

DEFAULT_WORKSPACE_ID = 1

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, Decimal: USD_TYPE}


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored lower-cased: one account per address however it is typed.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id (infra.security)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    """A user's role in a workspace (infra.security.roles.Role)."""

    __tablename__ = "memberships"
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A workspace's service credential. Only a keyed hash of the key is kept."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, for people
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # HMAC-SHA256, hex
    # Who made it: a user, another key, or "operator" (the keel command line).
    created_by_type: Mapped[str] = mapped_column(String(16))
    created_by_id: Mapped[int | None] = mapped_column(Integer)
    created_by_name: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()  # kept to the minute
    revoked_at: Mapped[datetime | None] = mapped_column()


class WsTicket(Base):
    """A single-use WebSocket ticket (for browsers, which cannot send headers there).

    In the database so that any API replica can redeem it; redeeming deletes the row,
    and only the one DELETE that removes it succeeds.
    """

    __tablename__ = "ws_tickets"
    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_type: Mapped[str] = mapped_column(String(16))  # "user" | "api_key"
    principal_id: Mapped[int] = mapped_column(Integer)
    workspace_id: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Agent(Timestamps, Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(String(500))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    max_iterations: Mapped[int] = mapped_column(Integer, default=8)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)

    tool_links: Mapped[list[AgentTool]] = relationship(
        order_by="AgentTool.position", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def tool_ids(self) -> list[int]:
        return [link.tool_id for link in self.tool_links]


class AgentTool(Base):
    """Which tools an agent may call, in the order the model is shown them."""

    __tablename__ = "agent_tools"
    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    tool_id: Mapped[int] = mapped_column(
        ForeignKey("tools.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class Tool(Timestamps, Base):
    __tablename__ = "tools"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(16))
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Secret values inside config are stored as Fernet ciphertext (infra.secrets).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Workflow(Timestamps, Base):
    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # the draft
    version: Mapped[int] = mapped_column(Integer, default=0)  # latest published
    has_unpublished_changes: Mapped[bool] = mapped_column(Boolean, default=True)


class WorkflowVersion(Base):
    """An immutable published snapshot. Executions always run one of these."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkflowVersionRef(Base):
    """Agents and tools a published version names, so deletes can refuse in one query."""

    __tablename__ = "workflow_version_refs"
    __table_args__ = (Index("ix_workflow_version_refs_target", "ref_type", "ref_id"),)

    workflow_version_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_versions.id", ondelete="CASCADE"), primary_key=True
    )
    ref_type: Mapped[str] = mapped_column(String(8), primary_key=True)  # "agent" | "tool"
    ref_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_workspace_status", "workspace_id", "status"),
        Index("ix_executions_workflow_status", "workflow_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"))
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    workflow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    temporal_workflow_id: Mapped[str | None] = mapped_column(String(200))
    temporal_run_id: Mapped[str | None] = mapped_column(String(64))
    # Who created it: {"type": "user"|"api_key"|"operator", "id", "name"} in three columns.
    created_by_type: Mapped[str | None] = mapped_column(String(16))
    created_by_id: Mapped[int | None] = mapped_column(Integer)
    created_by_name: Mapped[str | None] = mapped_column(String(254))
    # The run this one reran (issue 11), else null.
    parent_execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL"), index=True
    )
    # A rerun: the node it was asked to run again from (null: everything that can be
    # reused is).
    rerun_from_node: Mapped[str | None] = mapped_column(String(64))
    # Usage is not kept here: the usage ledger (UsageRecord) is its one record.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class NodeRun(Base):
    __tablename__ = "node_runs"
    __table_args__ = (UniqueConstraint("execution_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # None is SQL NULL (no output yet), not a JSON null: the record's write gives every
    # column of a new node run, so an unset output arrives as None.
    output: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Answered from a parent execution's result (a rerun), not run again.
    reused: Mapped[bool] = mapped_column(default=False)


class ExecutionEvent(Base):
    """Events kept after the run, so watchers can replay a finished execution."""

    __tablename__ = "execution_events"
    __table_args__ = (UniqueConstraint("execution_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    node_id: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column()
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UsageRecord(Base):
    """The usage ledger: one row per LLM call or tool call, written idempotently."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_workspace_time", "workspace_id", "created_at"),
        Index("ix_usage_agent_time", "agent_id", "created_at"),
        Index("ix_usage_workflow_time", "workflow_id", "created_at"),
        Index("ix_usage_execution", "execution_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(Integer)
    # No foreign keys: the ledger outlives deleted agents, workflows and runs.
    execution_id: Mapped[int | None] = mapped_column(Integer)
    workflow_id: Mapped[int | None] = mapped_column(Integer)
    agent_id: Mapped[int | None] = mapped_column(Integer)
    node_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # "llm" | "tool"
    provider: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200))
    tool_name: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    input_usd_per_mtok: Mapped[Decimal] = mapped_column(USD_TYPE, default=Decimal(0))
    output_usd_per_mtok: Mapped[Decimal] = mapped_column(USD_TYPE, default=Decimal(0))
    cost_usd: Mapped[Decimal] = mapped_column(USD_TYPE, default=Decimal(0))
    unpriced: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    # execution:node:attempt:call — unique, so a replayed recording is a no-op.
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Indexes for billing (migration 0002; figures from bench/billing_aggregation.py over a
# million rows). Reports and budget checks sum the same few columns over a time range of
# a workspace or of an agent; indexes holding all of them are read without visiting the
# table rows (2-3x faster on MariaDB, and without the agent one MariaDB reads the
# workspace index for agent-filtered reports: 30x slower). The unpriced index finds the
# few calls of unpriced models without reading the whole range.
_REPORTED = (
    UsageRecord.workflow_id,
    UsageRecord.kind,
    UsageRecord.unpriced,
    UsageRecord.execution_id,
    UsageRecord.prompt_tokens,
    UsageRecord.completion_tokens,
    UsageRecord.total_tokens,
    UsageRecord.cost_usd,
)
Index(
    "ix_usage_workspace_time_covering",
    UsageRecord.workspace_id,
    UsageRecord.created_at,
    UsageRecord.agent_id,
    *_REPORTED,
)
Index(
    "ix_usage_agent_time_covering",
    UsageRecord.agent_id,
    UsageRecord.created_at,
    UsageRecord.workspace_id,
    *_REPORTED,
)
Index(
    "ix_usage_workspace_unpriced_time",
    UsageRecord.workspace_id,
    UsageRecord.unpriced,
    UsageRecord.created_at,
)


class Budget(Base):
    """A monthly spending limit (USD) for the workspace (``agent_id`` null) or one agent.

    Months are calendar months in UTC. The database enforces one row per agent; the
    workspace row (null agent_id, which unique indexes do not compare) is kept single
    by writers locking the workspace row first (infra.ledger.set_budget).
    """

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("workspace_id", "agent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"))
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    monthly_usd: Mapped[Decimal] = mapped_column(USD_TYPE)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
