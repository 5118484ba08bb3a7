"""Webhook auth that fits the sender: a sealed Standard Webhooks signing secret and a hashed
secret-URL secret per project (each with its predecessor valid for 24 h after a rotation), and
the set of methods the project accepts (existing projects: all three, as before).

Revision ID: d9acf1fc1ae5
Revises: 138f18214334
Create Date: 2026-11-22 11:30:41.745861
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models import UTCDateTime

revision: str = 'd9acf1fc1ae5'
down_revision: str | None = '138f18214334'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_secret', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_previous', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_previous_until', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('webhook_url_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('webhook_url_previous_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('webhook_url_previous_until', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('webhook_auth', sa.String(length=40), server_default='signed,bearer,url', nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_projects_webhook_url_hash'), ['webhook_url_hash'])
        batch_op.create_unique_constraint(batch_op.f('uq_projects_webhook_url_previous_hash'), ['webhook_url_previous_hash'])


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_projects_webhook_url_previous_hash'), type_='unique')
        batch_op.drop_constraint(batch_op.f('uq_projects_webhook_url_hash'), type_='unique')
        batch_op.drop_column('webhook_auth')
        batch_op.drop_column('webhook_url_previous_until')
        batch_op.drop_column('webhook_url_previous_hash')
        batch_op.drop_column('webhook_url_hash')
        batch_op.drop_column('webhook_secret_previous_until')
        batch_op.drop_column('webhook_secret_previous')
        batch_op.drop_column('webhook_secret')

