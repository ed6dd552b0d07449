"""repository: what the access policy decides on, kept with each stored document

ITI-43 and ITI-86 are decided on the document as it was provided (ITI TF-2 §3.43, §3.86): its
patient, class code, confidentiality codes and the institution that provided it are recorded with
the row, so a repository registering at a remote registry can decide too. Rows stored before
have none; for them the registry's entry (same database) is asked.

Revision ID: r0002
Revises: r0001
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repository_documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_id", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("class_code", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("confidentiality", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("submitter", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repository_documents", schema=None) as batch_op:
        for column in ("submitter", "confidentiality", "class_code", "patient_id"):
            batch_op.drop_column(column)
