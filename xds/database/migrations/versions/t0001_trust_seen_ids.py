"""trust: identifiers already seen (replay protection, branch ``trust``)

Revision ID: t0001
Revises:
Create Date: 2026-11-23 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = ("trust",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trust_seen_ids",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("expires", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trust_seen_ids_expires", "trust_seen_ids", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_trust_seen_ids_expires", table_name="trust_seen_ids")
    op.drop_table("trust_seen_ids")
