"""repository documents (branch ``repository``)

Revision ID: r0001
Revises:
Create Date: 2026-11-22 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = ("repository",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repository_documents",
        sa.Column("repository_id", sa.String(length=128), nullable=False),
        sa.Column("unique_id", sa.String(length=160), nullable=False),
        sa.Column("sha1", sa.String(length=40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mime_type", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "unique_id"),
    )
    op.create_index("ix_repository_documents_sha1", "repository_documents", ["sha1"])
    op.create_index("ix_repository_documents_state", "repository_documents", ["state"])


def downgrade() -> None:
    op.drop_index("ix_repository_documents_state", table_name="repository_documents")
    op.drop_index("ix_repository_documents_sha1", table_name="repository_documents")
    op.drop_table("repository_documents")
