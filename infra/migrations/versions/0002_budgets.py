"""budgets, and indexes for billing reports

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:31:32.088294
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import infra.dbtypes


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Monthly budgets: one per workspace (agent_id null) and one per agent.
    op.create_table('budgets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=True),
    sa.Column('monthly_usd', sa.Numeric(precision=20, scale=10), nullable=False),
    sa.Column('updated_at', infra.dbtypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_budgets_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_budgets_workspace_id_workspaces')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets')),
    sa.UniqueConstraint('workspace_id', 'agent_id', name=op.f('uq_budgets_workspace_id'))
    )
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_budgets_agent_id'), ['agent_id'], unique=False)

    # Billing reports and budget checks sum these columns over a time range of a
    # workspace or of an agent; with all of them in the index the table rows are never
    # read (bench/billing_aggregation.py, a million rows: 2-3x faster on MariaDB; and
    # without the agent one MariaDB picks the workspace index for agent-filtered reports,
    # 30x slower). The unpriced index finds the few calls of unpriced models directly.
    # ix_usage_workspace_time and ix_usage_agent_time (0001) are prefixes of these.
    reported = ['workflow_id', 'kind', 'unpriced', 'execution_id', 'prompt_tokens',
                'completion_tokens', 'total_tokens', 'cost_usd']
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index('ix_usage_workspace_time_covering',
                              ['workspace_id', 'created_at', 'agent_id', *reported])
        batch_op.create_index('ix_usage_agent_time_covering',
                              ['agent_id', 'created_at', 'workspace_id', *reported])
        batch_op.create_index('ix_usage_workspace_unpriced_time',
                              ['workspace_id', 'unpriced', 'created_at'])


def downgrade() -> None:
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_workspace_unpriced_time')
        batch_op.drop_index('ix_usage_agent_time_covering')
        batch_op.drop_index('ix_usage_workspace_time_covering')

    # Dropping the table drops its indexes (MySQL refuses to drop an index a foreign
    # key needs on its own).
    op.drop_table('budgets')
