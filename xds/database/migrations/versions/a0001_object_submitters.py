"""access: the institution that submitted each registry object (branch ``access``)

Updates and removals of an entry are allowed only to the institution that submitted it
(``xds.trust.policy``, rule field ``requires_owner``); the registry records the organisation
number of the verified requester with every object it registers.

Revision ID: a0001
Revises:
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a0001"
down_revision = None
branch_labels = ("access",)
depends_on = ("0001",)


def upgrade() -> None:
    op.create_table(
        "object_submitters",
        sa.Column("uuid", sa.String(length=128), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )


def downgrade() -> None:
    op.drop_table("object_submitters")
