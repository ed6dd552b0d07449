"""ITI-62 Remove Metadata (Delete Document Set): the Document Registry's side (ITI TF-2b §3.62.4.1.3).

An ``lcm:RemoveObjectsRequest`` names stored objects by entryUUID in its ``rim:ObjectRefList``. They
are removed all together in one transaction, or none of them:

- an id the registry does not hold is UnresolvedReferenceException;
- an object still named by an association that is not removed with it is ReferencesExistException;
- a removal that would leave an object without its SubmissionSet membership (or a SubmissionSet
  without members) is XDSUnreferencedObjectException.

Only metadata is removed: the repository's documents are untouched (ITI-86 removes those). When the
newest version of an entry is removed, the newest remaining version becomes the newest again.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree
from sqlalchemy import Connection, Table, delete, func, or_, select, update

from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.registry import schema as t
from xds.registry.register import Registrar, _object_kinds

_LCM = "{" + v.NS_LCM + "}"
_RIM = "{" + v.NS_RIM + "}"
MAX_OBJECTS = 10_000
_CHUNK = 500


def read_remove_request(root: etree._Element) -> list[str]:
    """The entryUUIDs an lcm:RemoveObjectsRequest names (ebRS 3.0 §5.3, ITI TF-2b §3.62.4.1.2)."""
    if root.tag != _LCM + "RemoveObjectsRequest":
        raise XdsException.of(
            v.XDSRegistryError, f"expected lcm:RemoveObjectsRequest, found {etree.QName(root).localname}"
        )
    if root.find(_RIM + "AdhocQuery") is not None:
        raise XdsException.of(
            v.XDSRegistryError, "objects to remove are named in an ObjectRefList, not by a query"
        )
    ids = [ref.get("id", "").strip() for ref in root.iterfind(f"{_RIM}ObjectRefList/{_RIM}ObjectRef")]
    if not ids:
        raise XdsException.of(v.XDSRegistryError, "the RemoveObjectsRequest names no object")
    if len(ids) > MAX_OBJECTS:
        raise XdsException.of(v.XDSRegistryError, f"at most {MAX_OBJECTS} objects are removed at once")
    return list(dict.fromkeys(i.lower() if i.lower().startswith("urn:uuid:") else i for i in ids))


class Remover:
    """ITI-62 over one registry database, through the registrar's commits."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    async def remove(self, ids: list[str]) -> None:
        await self.registrar.commits.run(lambda conn: remove_objects(conn, ids))


def patients_of(conn: Connection, ids: list[str]) -> list[str]:
    """The patients of the objects ``ids`` names — documents, SubmissionSets, folders, and the
    ends of associations — as their audit message names them (ITI TF-2b §3.62.5)."""
    a = t.associations.c
    wanted = set(ids)
    for chunk in _chunks(sorted(wanted)):
        for row in conn.execute(select(a.source, a.target).where(a.uuid.in_(chunk))):
            wanted.update((row.source, row.target))
    found: dict[str, None] = {}
    for table in (t.documents, t.submission_sets, t.folders):
        for chunk in _chunks(sorted(wanted)):
            query = select(table.c.patient_id).where(table.c.uuid.in_(chunk)).distinct()
            found.update(dict.fromkeys(conn.execute(query).scalars()))
    return sorted(found)


def remove_objects(conn: Connection, ids: list[str]) -> None:
    """Remove ``ids`` in ``conn``'s transaction, or raise XdsException having removed nothing."""
    wanted = set(ids)
    kinds = _object_kinds(conn, wanted)
    missing = [i for i in ids if i not in kinds]
    if missing:
        raise XdsException(
            XdsError(v.UnresolvedReferenceException, f"{i} is not in the registry", i) for i in missing
        )
    links = _associations_touching(conn, wanted)
    errors = [
        XdsError(
            v.ReferencesExistException,
            f"association {uuid} ({_short(kind)}) still names {source if source in wanted else target}; "
            "remove it too",
            uuid,
        )
        for uuid, kind, source, target in links
        if uuid not in wanted
    ]
    if errors:
        raise XdsException(errors)
    errors = _left_unreferenced(conn, wanted, kinds)
    if errors:
        raise XdsException(errors)
    _delete(conn, kinds)


def _associations_touching(conn: Connection, ids: set[str]) -> list[tuple[str, str, str, str]]:
    a = t.associations.c
    found: dict[str, tuple[str, str, str, str]] = {}
    for chunk in _chunks(sorted(ids)):
        query = select(a.uuid, a.type, a.source, a.target).where(
            or_(a.source.in_(chunk), a.target.in_(chunk))
        )
        for row in conn.execute(query):
            found[row.uuid] = (row.uuid, row.type, row.source, row.target)
    return sorted(found.values())


def _left_unreferenced(conn: Connection, wanted: set[str], kinds: dict[str, str]) -> list[XdsError]:
    """Objects the removal of SubmissionSet memberships would strand (kept, but no longer in a set)."""
    a = t.associations.c
    removed = list(_removed_associations(conn, wanted, kinds))
    sources = _object_kinds(conn, {source for _, _, source, _ in removed})
    removed_members = [
        (source, target)
        for _, kind, source, target in removed
        if kind == v.HAS_MEMBER and sources.get(source) == "submissionset"
    ]
    errors: list[XdsError] = []
    for source, target in removed_members:
        if target not in wanted:
            others = conn.execute(
                select(func.count())
                .select_from(t.associations)
                .join(t.submission_sets, t.submission_sets.c.uuid == a.source)
                .where(a.target == target, a.type == v.HAS_MEMBER, a.uuid.not_in(wanted))
            ).scalar_one()
            if not others:
                errors.append(
                    XdsError(
                        v.XDSUnreferencedObjectException,
                        f"{target} would be left in no SubmissionSet; remove it too",
                        target,
                    )
                )
        if source not in wanted:
            left = conn.execute(
                select(func.count())
                .select_from(t.associations)
                .where(a.source == source, a.uuid.not_in(wanted))
            ).scalar_one()
            if not left:
                errors.append(
                    XdsError(
                        v.XDSUnreferencedObjectException,
                        f"SubmissionSet {source} would be left without members; remove it too",
                        source,
                    )
                )
    return list({(e.code, e.location): e for e in errors}.values())


def _removed_associations(
    conn: Connection, wanted: set[str], kinds: dict[str, str]
) -> Iterable[tuple[str, str, str, str]]:
    a = t.associations.c
    ids = sorted(i for i in wanted if kinds.get(i) == "association")
    for chunk in _chunks(ids):
        yield from (
            tuple(r)
            for r in conn.execute(select(a.uuid, a.type, a.source, a.target).where(a.uuid.in_(chunk)))
        )


def _delete(conn: Connection, kinds: dict[str, str]) -> None:
    by_kind: dict[str, list[str]] = {}
    for oid, kind in kinds.items():
        by_kind.setdefault(kind, []).append(oid)
    for chunk in _chunks(sorted(by_kind.get("document", []))):
        d = t.documents.c
        rows = conn.execute(select(d.seq, d.lid, d.unique_id).where(d.uuid.in_(chunk))).all()
        seqs = [r.seq for r in rows]
        conn.execute(delete(t.document_codes).where(t.document_codes.c.doc_seq.in_(seqs)))
        conn.execute(delete(t.documents).where(d.seq.in_(seqs)))
        _newest_again(conn, t.documents, {r.lid for r in rows})
        _release_unique_ids(conn, {r.unique_id for r in rows})
    for chunk in _chunks(sorted(by_kind.get("folder", []))):
        f = t.folders.c
        rows = conn.execute(select(f.seq, f.lid).where(f.uuid.in_(chunk))).all()
        seqs = [r.seq for r in rows]
        conn.execute(delete(t.folder_codes).where(t.folder_codes.c.folder_seq.in_(seqs)))
        conn.execute(delete(t.folders).where(f.seq.in_(seqs)))
        _newest_again(conn, t.folders, {r.lid for r in rows})
    for chunk in _chunks(sorted(by_kind.get("submissionset", []))):
        s = t.submission_sets.c
        seqs = conn.execute(select(s.seq).where(s.uuid.in_(chunk))).scalars().all()
        conn.execute(delete(t.submission_set_authors).where(t.submission_set_authors.c.ss_seq.in_(seqs)))
        conn.execute(delete(t.submission_sets).where(s.seq.in_(seqs)))
    for chunk in _chunks(sorted(by_kind.get("association", []))):
        conn.execute(delete(t.associations).where(t.associations.c.uuid.in_(chunk)))
    for chunk in _chunks(sorted(kinds)):
        conn.execute(delete(t.registry_objects).where(t.registry_objects.c.uuid.in_(chunk)))
        conn.execute(delete(t.object_submitters).where(t.object_submitters.c.uuid.in_(chunk)))


def _newest_again(conn: Connection, table: Table, lids: set[str]) -> None:
    """After a removal, the highest remaining version of each entry is its newest."""
    c = table.c
    for lid in sorted(lids):
        if conn.execute(select(c.seq).where(c.lid == lid, c.latest == 1)).first() is not None:
            continue
        top = conn.execute(select(func.max(c.version)).where(c.lid == lid)).scalar()
        if top is not None:
            conn.execute(update(table).where(c.lid == lid, c.version == top).values(latest=1))


def _release_unique_ids(conn: Connection, unique_ids: set[str]) -> None:
    """A document uniqueId no entry carries any more is free again."""
    d = t.documents.c
    for uid in sorted(unique_ids):
        if conn.execute(select(d.seq).where(d.unique_id == uid).limit(1)).first() is None:
            conn.execute(delete(t.document_hashes).where(t.document_hashes.c.unique_id == uid))


def _chunks(values: list[str] | list[int]) -> Iterable[list]:  # type: ignore[type-arg]
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _short(urn: str) -> str:
    return urn.rsplit(":", 1)[-1]
