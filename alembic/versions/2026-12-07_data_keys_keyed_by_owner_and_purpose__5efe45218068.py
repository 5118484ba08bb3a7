"""data_keys keyed by (owner, purpose), one B-tree: an erasure rewrites half the pages

The table was a rowid table (SQLite) or heap (PostgreSQL) with a primary key on `id` and a
unique index on (owner, purpose): three B-trees on SQLite, two indexes on PostgreSQL, each
touched by every deleted key. Now (owner, purpose) is the primary key, `id` a plain column
(it is bound into each wrapped key, never looked up), and on SQLite the rows live in the
primary key's B-tree (WITHOUT ROWID). The table is rebuilt on SQLite (batch mode copies the
rows); PostgreSQL swaps its constraints in place.

Revision ID: 5efe45218068
Revises: e034109cac77
Create Date: 2026-12-07 03:35:28.499922
"""

from collections.abc import Sequence

from alembic import op

revision: str = '5efe45218068'
down_revision: str | None = 'e034109cac77'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('data_keys', recreate='auto', table_kwargs={'sqlite_with_rowid': False}) as batch_op:
        batch_op.drop_index('uq_data_keys_owner_purpose')
        batch_op.drop_constraint('pk_data_keys', type_='primary')
        batch_op.create_primary_key('pk_data_keys', ['owner', 'purpose'])


def downgrade() -> None:
    with op.batch_alter_table('data_keys', recreate='auto', table_kwargs={'sqlite_with_rowid': True}) as batch_op:
        batch_op.drop_constraint('pk_data_keys', type_='primary')
        batch_op.create_primary_key('pk_data_keys', ['id'])
        batch_op.create_index('uq_data_keys_owner_purpose', ['owner', 'purpose'], unique=True)
