"""data_keys keyed by (purpose, owner): one purpose's keys share pages

The primary key was (owner, purpose), so a subject's analytics key sat beside its grace key
and an erasure of 10,000 analytics keys touched pages spread over the whole table. With the
purpose first, the keys of one purpose are contiguous in the primary key's B-tree (SQLite:
the table itself, WITHOUT ROWID), and anonymisation rewrites only pages of the analytics
part. SQLite rebuilds the table (batch mode copies the rows); PostgreSQL swaps the constraint.

Revision ID: 7b3c9d2e4f10
Revises: 5efe45218068
Create Date: 2026-12-07 05:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '7b3c9d2e4f10'
down_revision: str | None = '5efe45218068'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _primary_key(columns: list[str]) -> None:
    with op.batch_alter_table('data_keys', recreate='auto', table_kwargs={'sqlite_with_rowid': False}) as batch_op:
        batch_op.drop_constraint('pk_data_keys', type_='primary')
        batch_op.create_primary_key('pk_data_keys', columns)


def upgrade() -> None:
    _primary_key(['purpose', 'owner'])


def downgrade() -> None:
    _primary_key(['owner', 'purpose'])
