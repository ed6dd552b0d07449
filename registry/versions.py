"""Versions of stored DocumentEntries and Folders (ITI TF-3 §4.1.x, ITI TF-2b §3.57.4.1.3.3).

A logical entry (``lid``) has versions 1..n, one row each; the newest has ``latest`` = 1. Making
version n + 1 deprecates version n in the same transaction: its row and its stored fragment both
say Deprecated, and it is no longer the newest. The statement that does so only touches a row that
is still the newest, so of two updates of one entry racing on PostgreSQL the second finds nothing
to deprecate once the first has committed, and is refused (XDSMetadataVersionError); the
(lid, version) unique index refuses it besides.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Table, select, update

from xds import safexml
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsException
from xds.metadata.model import DocumentEntry, RegistryObject
from xds.registry import schema as t


@dataclass
class Stored:
    """One stored version (or one stored association: ``version`` 1, always the newest)."""

    seq: int
    uuid: str
    lid: str
    version: int
    latest: bool
    status: str
    patient_id: str
    unique_id: str
    xml: bytes

    def parsed(self) -> RegistryObject:
        obj = ebrim.parse_object(safexml.parse(self.xml))
        assert isinstance(obj, RegistryObject)
        return obj


@dataclass
class Link:
    uuid: str
    source: str
    target: str


def _columns(table: Table) -> list:  # type: ignore[type-arg]
    c = table.c
    if table is t.associations:
        return [c.seq, c.uuid, c.uuid, c.status, c.status, c.status, c.xml]
    return [c.seq, c.uuid, c.lid, c.version, c.latest, c.status, c.patient_id, c.unique_id, c.xml]


def _stored(table: Table, row: object) -> Stored:
    if table is t.associations:
        seq, uuid, _, status, _, _, xml = row  # type: ignore[misc]
        return Stored(seq, uuid, uuid, 1, True, status, "", "", bytes(xml))
    seq, uuid, lid, version, latest, status, patient_id, unique_id, xml = row  # type: ignore[misc]
    return Stored(seq, uuid, lid, version, bool(latest), status, patient_id, unique_id, bytes(xml))


def newest(conn: Connection, table: Table, lid: str) -> Stored | None:
    """The newest version of the logical entry ``lid`` in ``table`` (documents or folders), locked
    on PostgreSQL until the transaction ends."""
    query = select(*_columns(table)).where(table.c.lid == lid, table.c.latest == 1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else _stored(table, row)


def current(conn: Connection, table: Table, uuid: str) -> Stored:
    """The stored object ``uuid`` of ``table`` (documents, folders or associations), locked on
    PostgreSQL."""
    query = select(*_columns(table)).where(table.c.uuid == uuid)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise XdsException.of(v.XDSMetadataUpdateError, f"{uuid} is not in the registry", uuid)
    return _stored(table, row)


def deprecate(conn: Connection, table: Table, stored: Stored) -> None:
    """Version ``stored`` is superseded: Deprecated, and no longer the newest."""
    fragment = _with_status(stored.xml, v.STATUS_DEPRECATED)
    done = conn.execute(
        update(table)
        .where(table.c.seq == stored.seq, table.c.latest == 1)
        .values(status=v.STATUS_DEPRECATED, latest=0, xml=fragment)
    )
    if done.rowcount != 1:
        raise XdsException.of(
            v.XDSMetadataVersionError,
            f"version {stored.version} of {stored.lid} was superseded by another update meanwhile",
            stored.lid,
        )


def set_status(conn: Connection, table: Table, seq: int, status: str) -> None:
    """A status update (ITI TF-2b §3.57.4.1.3.3.3) of one stored row, fragment included."""
    xml = conn.execute(select(table.c.xml).where(table.c.seq == seq)).scalar_one()
    conn.execute(
        update(table).where(table.c.seq == seq).values(status=status, xml=_with_status(bytes(xml), status))
    )


def _with_status(xml: bytes, status: str) -> bytes:
    obj = ebrim.parse_object(safexml.parse(xml))
    assert isinstance(obj, RegistryObject)
    obj.status = status
    return ebrim.to_bytes(obj)


def memberships(conn: Connection, uuid: str, *, as_target: bool) -> list[Link]:
    """The Approved folder HasMembers of a document (``as_target``) or of a folder (as source)."""
    a = t.associations.c
    query = select(a.uuid, a.source, a.target).where(a.type == v.HAS_MEMBER, a.status == v.STATUS_APPROVED)
    if as_target:
        query = query.join(t.folders, t.folders.c.uuid == a.source).where(a.target == uuid)
    else:
        query = query.where(a.source == uuid)
    return [Link(r.uuid, r.source, r.target) for r in conn.execute(query.order_by(a.seq))]


def rebind_hash(conn: Connection, doc: DocumentEntry) -> None:
    """A new version's hash is the one its uniqueId stands for from now on (ITI TF-2 §3.42.4.1.3.3)."""
    digest = (doc.hash or "").lower() or None
    if digest and doc.unique_id:
        h = t.document_hashes.c
        conn.execute(update(t.document_hashes).where(h.unique_id == doc.unique_id).values(hash=digest))


def history(conn: Connection, lid: str) -> list[Stored]:
    """Every version of the DocumentEntry ``lid``, oldest first."""
    d = t.documents
    rows = conn.execute(select(*_columns(d)).where(d.c.lid == lid).order_by(d.c.version)).all()
    return [_stored(d, row) for row in rows]
