"""data_keys: the key hierarchy (KEK versions, wrapped data keys) for erasure by key destruction

Revision ID: b4c8b8b1fc1d
Revises: 43a6b905d8f8
Create Date: 2026-11-22 08:02:48.813176
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = 'b4c8b8b1fc1d'
down_revision: str | None = '43a6b905d8f8'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('kek_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('retired_at', app.models.UTCDateTime(), nullable=True),
    sa.Column('check', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_kek_versions'))
    )
    op.create_table('data_keys',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=20), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['kek_version'], ['kek_versions.version'], name=op.f('fk_data_keys_kek_version_kek_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_keys'))
    )
    with op.batch_alter_table('data_keys', schema=None) as batch_op:
        batch_op.create_index('uq_data_keys_owner_purpose', ['owner', 'purpose'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('data_keys', schema=None) as batch_op:
        batch_op.drop_index('uq_data_keys_owner_purpose')

    op.drop_table('data_keys')
    op.drop_table('kek_versions')
