"""holds keep whose data they keep

A room or message hold kept the covered messages' texts and events' values under its own key,
but not who wrote them: the purge of an author destroyed the only link from the kept messages
to a user id, and the regulator read anonymous evidence. held_authors keeps, per hold, the
user id of each subject whose covered data it took, sealed under the hold's key; the rows go
with the key once the hold has ended.

Revision ID: 3a68627b0b7d
Revises: 4cd90c21ecc8
Create Date: 2026-12-07 19:39:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '3a68627b0b7d'
down_revision: str | None = '4cd90c21ecc8'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'held_authors',
        sa.Column('hold_id', sa.String(length=36), nullable=False),
        sa.Column('subject_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['hold_id'], ['holds.id'], name=op.f('fk_held_authors_hold_id_holds')),
        sa.PrimaryKeyConstraint('hold_id', 'subject_id', name=op.f('pk_held_authors')),
    )


def downgrade() -> None:
    op.drop_table('held_authors')
