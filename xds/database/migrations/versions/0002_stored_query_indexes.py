"""indexes for ITI-18 stored queries

Stored queries follow ITI-8 merges (every id merged into a survivor) and GetFolders looks
folders up by logicalID ($XDSFolderLogicalID, ITI TF-2 §3.18.4.1.2.3.7.7); both would otherwise
scan a table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index("ix_patients_merged_into", ["merged_into"], unique=False)
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.create_index("ix_folders_lid", ["lid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.drop_index("ix_folders_lid")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index("ix_patients_merged_into")
