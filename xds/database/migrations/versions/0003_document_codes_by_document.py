"""document codes looked up by document, kind and value

A stored query's author, event-code and confidentiality-code filters ask, for each candidate
document, whether it has a row of one kind matching the values (ITI TF-2 §3.18.4.1.2.3.7.1). With
an index on ``doc_seq`` alone SQLite preferred the covering ``(kind, value, doc_seq)`` index, and
for an author pattern (no usable prefix) that meant reading every author row of the registry for
each candidate. ``(doc_seq, kind, value)`` is covering and matches on two columns, so it is the
one chosen, with or without statistics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("document_codes", schema=None) as batch_op:
        batch_op.create_index("ix_document_codes_doc_kind", ["doc_seq", "kind", "value"], unique=False)
        batch_op.drop_index("ix_document_codes_doc")


def downgrade() -> None:
    with op.batch_alter_table("document_codes", schema=None) as batch_op:
        batch_op.create_index("ix_document_codes_doc", ["doc_seq"], unique=False)
        batch_op.drop_index("ix_document_codes_doc_kind")
