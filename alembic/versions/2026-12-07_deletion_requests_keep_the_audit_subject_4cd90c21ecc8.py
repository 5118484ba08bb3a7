"""deletion requests keep the audit subject

A purge destroys the link from a user id to its subject, so a partner asking for a user's
requests (`GET /v1/deletion-requests?user_id=`) found nothing once the erasure had completed.
Each request now keeps the audit log's keyed hash of the user id, as the log itself does, and
the filter matches on it. Requests made before this revision have none: they are found through
their subject while it is linked, as before.

Revision ID: 4cd90c21ecc8
Revises: 41b5e4f0f66a
Create Date: 2026-12-07 19:04:43.067902
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '4cd90c21ecc8'
down_revision: str | None = '41b5e4f0f66a'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deletion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audit_subject', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_deletion_requests_project_audit_subject', ['project_id', 'audit_subject'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('deletion_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_deletion_requests_project_audit_subject')
        batch_op.drop_column('audit_subject')
