"""room for in-place updates of subjects and deletion requests on PostgreSQL

Subjects are updated all the time (last activity on every ingest batch, the status at
anonymise) and requests at every step. With PostgreSQL's default fillfactor (100) their pages
are full, so each update writes its new row version on another page and adds an entry to
every index. With 10 % of each page left free, an update that changes no indexed column stays
on its page (a HOT update) and leaves the indexes alone. Affects pages written from now on
(a VACUUM FULL or pg_repack applies it to existing ones). SQLite updates rows in place anyway.

Revision ID: 41b5e4f0f66a
Revises: 6643a38dc7c7
Create Date: 2026-12-07 18:04:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '41b5e4f0f66a'
down_revision: str | None = '6643a38dc7c7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('subjects', 'deletion_requests')


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in TABLES:
            op.execute(f'ALTER TABLE {table} SET (fillfactor = 90)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in TABLES:
            op.execute(f'ALTER TABLE {table} RESET (fillfactor)')
