"""audit: ATNA audit records and the patients they concern (branch ``audit``)

Append-only: a trigger refuses every UPDATE (on SQLite and PostgreSQL). On PostgreSQL, UPDATE,
DELETE and TRUNCATE are also revoked from PUBLIC; the service's own role is granted only SELECT and
INSERT (README, "Audit trail"), so only the owner role that runs ``xds audit --purge`` deletes.

Revision ID: au0001
Revises:
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "au0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None

TABLES = ("audit_events", "audit_event_patients")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("event_time", sa.String(length=32), nullable=False),
        sa.Column("transaction_code", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("hpr", sa.String(length=64), nullable=False),
        sa.Column("organisation", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("btg", sa.Boolean(), nullable=False),
        sa.Column("documents", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["event_time"])
    op.create_table(
        "audit_event_patients",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("patient", sa.String(length=256), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "patient"),
    )
    op.create_index("ix_audit_event_patients_id", "audit_event_patients", ["patient_id", "event_time"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION xds_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION xds_audit_append_only()"
            )
            op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC")
    else:
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
            )


def downgrade() -> None:
    for table in TABLES:
        op.execute(
            f"DROP TRIGGER IF EXISTS {table}_no_update"
            + (f" ON {table}" if op.get_bind().dialect.name == "postgresql" else "")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS xds_audit_append_only()")
    op.drop_index("ix_audit_event_patients_id", table_name="audit_event_patients")
    op.drop_table("audit_event_patients")
    op.drop_index("ix_audit_events_time", table_name="audit_events")
    op.drop_table("audit_events")
