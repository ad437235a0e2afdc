"""Reruns: the node an execution reruns from; node runs that were reused.

(``executions.parent_execution_id``, the run it reran, came with 0004.)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rerun_from_node', sa.String(length=64), nullable=True))
    with op.batch_alter_table('node_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reused', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('node_runs', schema=None) as batch_op:
        batch_op.drop_column('reused')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('rerun_from_node')
