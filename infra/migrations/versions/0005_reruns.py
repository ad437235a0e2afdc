"""Reruns: an execution's parent and the node it reruns from; node runs that were reused.

``parent_execution_id`` may already exist (migration 0004 of the access-control
work adds it too), so it is added only when missing.

Revision ID: 0005
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    existing = _columns('executions')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        if 'parent_execution_id' not in existing:
            batch_op.add_column(sa.Column('parent_execution_id', sa.Integer(), nullable=True))
            batch_op.create_foreign_key('fk_executions_parent_execution_id', 'executions',
                                        ['parent_execution_id'], ['id'], ondelete='SET NULL')
        if 'rerun_from_node' not in existing:
            batch_op.add_column(sa.Column('rerun_from_node', sa.String(length=64),
                                          nullable=True))
    if 'reused' not in _columns('node_runs'):
        with op.batch_alter_table('node_runs', schema=None) as batch_op:
            batch_op.add_column(sa.Column('reused', sa.Boolean(), nullable=False,
                                          server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('node_runs', schema=None) as batch_op:
        batch_op.drop_column('reused')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('rerun_from_node')
        batch_op.drop_constraint('fk_executions_parent_execution_id', type_='foreignkey')
        batch_op.drop_column('parent_execution_id')
