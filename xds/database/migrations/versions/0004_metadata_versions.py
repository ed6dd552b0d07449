"""versioned metadata: every DocumentEntry and Folder at version 1 of its logical entry

Metadata Update (ITI TF-2 §3.57, ITI TF-3 §4.1.x) keeps every version of a DocumentEntry or Folder
under one logicalId (``lid``); the newest has ``latest`` = 1. A document's availability
(ITI TF-3 §4.2.3.2.28) becomes a column so stored queries can match Offline entries. The versions
of a folder share its uniqueId, so the uniqueId alone is no longer unique: (uniqueId, version) is,
and (lid, version) is for both tables — of two updates racing to make the same version, one is
refused. Every stored fragment gains ``rim:VersionInfo versionName="1"``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xds import safexml
from xds.metadata import ebrim
from xds.metadata.model import RegistryObject

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ONLINE = "urn:ihe:iti:2010:DocumentAvailability:Online"
_BATCH = 2000
_FRAGMENT_TABLES = ("documents", "folders", "submission_sets", "associations")


def _folders_without_unique_id() -> sa.Table:
    """The folders table as 0001 made it, less its UNIQUE(unique_id) (the batch copies this)."""
    return sa.Table(
        "folders",
        sa.MetaData(),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(length=128), nullable=False, unique=True),
        sa.Column("lid", sa.String(length=128), nullable=False),
        sa.Column("unique_id", sa.String(length=160), nullable=False),
        sa.Column("patient_id", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("last_update_time", sa.String(length=14), nullable=True),
        sa.Column("home", sa.String(length=128), nullable=True),
        sa.Column("xml", sa.LargeBinary(), nullable=False),
        sa.Index("ix_folders_patient", "patient_id", "last_update_time"),
        sa.Index("ix_folders_lid", "lid"),
    )


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("latest", sa.SmallInteger(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column("availability", sa.String(length=64), nullable=False, server_default=ONLINE)
        )
        batch_op.drop_index("ix_documents_lid")
        batch_op.create_index("ux_documents_lid_version", ["lid", "version"], unique=True)

    if bind.dialect.name == "postgresql":
        op.drop_constraint("folders_unique_id_key", "folders", type_="unique")
        batch = op.batch_alter_table("folders", schema=None)
    else:  # SQLite: the table is copied without the constraint
        batch = op.batch_alter_table("folders", copy_from=_folders_without_unique_id(), recreate="always")
    with batch as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("latest", sa.SmallInteger(), nullable=False, server_default="1"))
        batch_op.drop_index("ix_folders_lid")
        batch_op.create_index("ux_folders_unique_id_version", ["unique_id", "version"], unique=True)
        batch_op.create_index("ux_folders_lid_version", ["lid", "version"], unique=True)

    for table in _FRAGMENT_TABLES:
        _version_fragments(bind, table)


def _version_fragments(bind: sa.Connection, name: str) -> None:
    """Give every stored fragment of ``name`` its lid and ``rim:VersionInfo versionName="1"``."""
    table = sa.table(name, sa.column("seq", sa.Integer), sa.column("xml", sa.LargeBinary))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(table.c.seq, table.c.xml).where(table.c.seq > last).order_by(table.c.seq).limit(_BATCH)
        ).all()
        if not rows:
            return
        for seq, xml in rows:
            obj = ebrim.parse_object(safexml.parse(bytes(xml)))
            if not isinstance(obj, RegistryObject) or obj.version_name:
                continue
            obj.version_name = "1"
            obj.lid = obj.lid or obj.id
            bind.execute(sa.update(table).where(table.c.seq == seq).values(xml=ebrim.to_bytes(obj)))
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.drop_index("ux_folders_lid_version")
        batch_op.drop_index("ux_folders_unique_id_version")
        batch_op.create_index("ix_folders_lid", ["lid"], unique=False)
        batch_op.drop_column("latest")
        batch_op.drop_column("version")
        batch_op.create_unique_constraint("folders_unique_id_key", ["unique_id"])
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ux_documents_lid_version")
        batch_op.create_index("ix_documents_lid", ["lid"], unique=False)
        batch_op.drop_column("availability")
        batch_op.drop_column("latest")
        batch_op.drop_column("version")
