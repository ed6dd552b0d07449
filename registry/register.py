"""ITI-42 Register Document Set-b: the Document Registry's side (ITI TF-2 §3.42.4.1.3, ITI TF-3 §4.2).

One submission is one database transaction: it is validated as a whole, checked against what the
registry holds (patient, uniqueIds, relationship targets, folders), and stored with its canonical
ebRIM fragments — or nothing of it is stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from xds.database import GroupCommit, reader, run_blocking, write_transaction
from xds.database.statements import Prepared
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.hl7v2 import CX
from xds.metadata.model import (
    Association,
    Classification,
    DocumentEntry,
    RegistryObject,
    RegistryPackage,
    Submission,
)
from xds.metadata.validation import ValidationProfile, validate_submission
from xds.profiles import Profile
from xds.registry import rows
from xds.registry import schema as t
from xds.registry.patients import PatientDirectory, canonical_cx

# Relationship associations whose target must be an Approved document of the same patient
# (ITI TF-3 §4.2.2.2); RPLC and XFRM_RPLC also deprecate it.
_TARGET_MUST_BE_APPROVED = frozenset({v.RPLC, v.XFRM, v.APND, v.XFRM_RPLC})
# When a document is replaced, its transformations and addenda are deprecated with it.
_DEPENDENT_TYPES = (v.XFRM, v.APND)


def new_uuid() -> str:
    """A random (version 4) UUID URN, RFC 4122 §4.4 — without building a ``uuid.UUID`` object."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_dtm() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


@dataclass(slots=True)
class StoredDocument:
    uuid: str
    lid: str
    seq: int
    status: str
    patient_id: str


@dataclass(slots=True)
class StoredFolder:
    uuid: str
    seq: int
    status: str
    patient_id: str


@dataclass
class _Plan:
    """What one submission will write, gathered before any row is inserted."""

    sub: Submission
    patient_id: str
    supplied_uuids: set[str] = field(default_factory=set)
    existing_docs: dict[str, StoredDocument] = field(default_factory=dict)
    existing_folders: dict[str, StoredFolder] = field(default_factory=dict)
    deprecate: list[str] = field(default_factory=list)
    touched_folders: set[str] = field(default_factory=set)
    extra_associations: list[Association] = field(default_factory=list)


@dataclass
class _Registration:
    """One validated submission, ready to be written inside a transaction (``apply``)."""

    registrar: Registrar
    plan: _Plan
    rows: _SubmissionRows
    now: str
    within: Callable[[Connection], None] | None

    def apply(self, conn: Connection) -> None:
        """Write the submission in ``conn``'s transaction. It may run again in a new transaction
        after one that was rolled back (:class:`xds.database.GroupCommit`), so what it learns
        from the database is gathered afresh each time."""
        registrar, plan = self.registrar, self.plan
        plan.existing_docs, plan.existing_folders = {}, {}
        plan.deprecate, plan.touched_folders, plan.extra_associations = [], set(), []
        sub = plan.sub
        ss = sub.submission_sets[0]
        pid = ss.patient_id or ""
        plan.patient_id = registrar.resolve_patient(pid, ss.id, conn)
        if plan.patient_id != pid:  # a merged id: filed under the surviving one
            _rewrite_patient_id(sub, plan.patient_id)
            self.rows = _SubmissionRows.of(sub)
        registrar._check_against_registry(conn, plan)
        registrar._store(conn, plan, self.rows, self.now)
        if self.within is not None:
            self.within(conn)

    def refusal(self) -> XdsException:
        """What to answer when a unique constraint refused the submission (after its rollback)."""
        return XdsException(self.registrar._explain_conflict(self.plan))


class Registrar:
    """The Document Registry's ITI-42 logic over one database."""

    def __init__(
        self,
        engine: Engine,
        patients: PatientDirectory,
        profile: Profile,
        *,
        clock: Callable[[], str] = now_dtm,
    ) -> None:
        self.engine = engine
        self.patients = patients
        self.profile = profile
        self.clock = clock
        self.validation = ValidationProfile(check_person_number=self._check_person_number)
        self.commits = GroupCommit(engine)

    # ---------------------------------------------------------------------------------------------
    def _check_person_number(self, id_number: str, authority: str) -> str:
        status = self.profile.patient_id_status(id_number, authority)
        if status == "malformed":
            return f"{id_number!r} is not a valid national identity number under {authority}"
        return ""

    def resolve_patient(self, pid: str, location: str, conn: Connection | None = None) -> str:
        """The patient id to file under, or XDSUnknownPatientId (ITI TF-2 §3.42.4.1.3.2)."""
        cx = CX.parse(pid)
        status = self.profile.patient_id_status(cx.id, cx.authority_oid)
        if status == "malformed":
            raise XdsException.of(
                v.XDSRegistryMetadataError,
                f"patient id {pid!r} is not a valid national identity number",
                location,
            )
        resolved = self.patients.resolve(pid, conn)
        if resolved is not None:
            return resolved
        if status == "valid":  # filed in canonical form, as an identifier from the feed is
            return canonical_cx(pid)
        raise XdsException.of(
            v.XDSUnknownPatientId, f"patient id {pid!r} is not known to this registry", location
        )

    def _survivor(self, pid: str, conn: Connection) -> str:
        """The identifier an object filed under ``pid`` now belongs to: the survivor of its merges,
        in canonical form (``pid`` itself when it is neither known nor a CX)."""
        resolved = self.patients.resolve(pid, conn)
        if resolved is not None:
            return resolved
        try:
            return canonical_cx(pid)
        except ValueError:
            return pid

    # ---------------------------------------------------------------------------------------------
    def register(self, sub: Submission, within: Callable[[Connection], None] | None = None) -> None:
        """Register ``sub`` or raise :class:`XdsException` having stored nothing.

        Everything that needs no database (validation, entryUUIDs, statuses, rows and their ebRIM
        fragments) is done before the transaction begins: on SQLite a writing transaction holds the
        database's one write lock, so only the statements and the commit happen inside it.
        ``within`` runs last in the same transaction (a repository of this process records its
        documents there, ITI TF-2 §3.41.4.1.3); if it raises, nothing of the submission is stored.
        """
        job = self.prepare(sub, within)
        try:
            with write_transaction(self.engine) as conn:
                job.apply(conn)
        except IntegrityError as exc:
            raise job.refusal() from exc

    async def register_together(
        self, sub: Submission, within: Callable[[Connection], None] | None = None
    ) -> None:
        """:meth:`register` for the server: submissions that arrive together share one commit
        (:class:`xds.database.GroupCommit`), each in its own savepoint — one refused leaves
        the others as they would be had it never come."""
        job = await run_blocking(self.prepare, sub, within)
        try:
            await self.commits.run(job.apply)
        except IntegrityError as exc:
            raise job.refusal() from exc

    def prepare(self, sub: Submission, within: Callable[[Connection], None] | None = None) -> _Registration:
        """Validate ``sub`` and build what it will write; XdsException if it is invalid as it stands."""
        errors = validate_submission(sub, profile=self.validation)
        if any(e.is_error for e in errors):
            raise XdsException(errors)
        ss = sub.submission_sets[0]
        pid = ss.patient_id or ""
        supplied = {o.id.lower() for o in sub.objects if o.id.startswith("urn:uuid:")}
        assign_uuids(sub)
        plan = _Plan(sub=sub, patient_id=pid, supplied_uuids=supplied)
        now = self.clock()
        _settle(sub, now)
        return _Registration(self, plan, _SubmissionRows.of(sub), now, within)

    def _explain_conflict(self, plan: _Plan) -> list[XdsError]:
        """Name what collided when a unique constraint refused the submission.

        SubmissionSet and Folder uniqueIds are left to the database's unique constraints rather
        than looked up first, which keeps the common case to a few statements; on a collision this
        finds which (ITI TF-3 §4.2.3.3.12, §4.2.3.4.8: XDSDuplicateUniqueIdInRegistry).
        """
        errors: list[XdsError] = []
        with reader(self.engine).connect() as conn:
            for pkg in plan.sub.packages:
                uid = pkg.unique_id
                table = t.submission_sets if pkg.is_submission_set else t.folders
                if uid and conn.execute(select(table.c.seq).where(table.c.unique_id == uid)).first():
                    errors.append(
                        XdsError(
                            v.XDSDuplicateUniqueIdInRegistry,
                            f"uniqueId {uid} is already in the registry",
                            pkg.id,
                        )
                    )
        return errors or [
            XdsError(
                v.XDSDuplicateUniqueIdInRegistry,
                "an object of this submission (uniqueId or entryUUID) is already in the registry",
                plan.sub.submission_sets[0].id,
            )
        ]

    # ---------------------------------------------------------------------------------------------
    def _check_against_registry(self, conn: Connection, plan: _Plan) -> None:
        sub = plan.sub
        in_message = {o.id for o in sub.objects}
        errors: list[XdsError] = []

        # what the registry holds of the entryUUIDs a submitter chose and the objects referenced
        referenced = {a.target_object for a in sub.associations} | {a.source_object for a in sub.associations}
        referenced -= in_message
        kinds = _object_kinds(conn, plan.supplied_uuids | referenced)
        for oid in sorted(plan.supplied_uuids & kinds.keys()):
            errors.append(
                XdsError(v.XDSRegistryMetadataError, f"entryUUID {oid} is already used in the registry", oid)
            )
        for ref in sorted(referenced - kinds.keys()):
            errors.append(
                XdsError(
                    v.XDSRegistryMetadataError,
                    f"referenced object {ref} is neither in the submission nor in the registry",
                    ref,
                )
            )
        plan.existing_docs = _load_documents(conn, {r for r in referenced if kinds.get(r) == "document"})
        plan.existing_folders = _load_folders(conn, {r for r in referenced if kinds.get(r) == "folder"})
        # objects filed under an identifier since merged away belong to the survivor (ITI TF-2
        # §3.8.4.2): the same patient for the same-patient rules below
        for stored in (*plan.existing_docs.values(), *plan.existing_folders.values()):
            stored.patient_id = self._survivor(stored.patient_id, conn)

        by_id = sub.by_id()
        ss = sub.submission_sets[0]
        for assoc in sub.associations:
            errors.extend(self._check_association(assoc, by_id, ss, plan))
        if errors:
            raise XdsException(errors)

        # document uniqueIds: same hash = resubmission, different hash = refused (ITI TF-2 §3.42.4.1.3.3)
        errors = _claim_document_unique_ids(conn, sub.documents)
        if errors:
            raise XdsException(errors)

    def _check_association(
        self, assoc: Association, by_id: dict[str, RegistryObject], ss: RegistryPackage, plan: _Plan
    ) -> Iterable[XdsError]:
        atype = assoc.association_type
        target = assoc.target_object
        if atype in v.RELATIONSHIP_TYPES:
            stored = plan.existing_docs.get(target)
            if stored is None:
                if target in by_id:
                    return  # validation already reported a target inside the message
                yield XdsError(
                    v.XDSRegistryMetadataError,
                    f"{_short(atype)} target {target} is not a DocumentEntry in the registry",
                    assoc.id,
                )
                return
            if atype in _TARGET_MUST_BE_APPROVED and stored.status != v.STATUS_APPROVED:
                yield XdsError(
                    v.XDSRegistryDeprecatedDocumentError,
                    f"{_short(atype)} target {target} is not Approved (it is {_short(stored.status)})",
                    assoc.id,
                )
            if stored.patient_id != plan.patient_id:
                yield XdsError(
                    v.XDSPatientIdDoesNotMatch,
                    f"{_short(atype)} target {target} belongs to another patient",
                    assoc.id,
                )
            if atype in v.REPLACING_TYPES:
                if target in plan.deprecate:
                    # two replacements of one document would both stay Approved; across two
                    # submissions the second is refused, so it is here too
                    yield XdsError(
                        v.XDSRegistryMetadataError,
                        f"{target} is replaced twice in this submission; one replacement only",
                        assoc.id,
                    )
                plan.deprecate.append(target)
            return
        if atype != v.HAS_MEMBER:
            return
        source = assoc.source_object
        if source == ss.id:
            # SubmissionSet -> existing document or folder (by reference)
            doc = plan.existing_docs.get(target)
            if doc is not None and doc.patient_id != plan.patient_id:
                yield XdsError(
                    v.XDSPatientIdDoesNotMatch,
                    f"document {target} referenced by the submission set belongs to another patient",
                    assoc.id,
                )
            folder = plan.existing_folders.get(target)
            if folder is not None and folder.patient_id != plan.patient_id:
                yield XdsError(
                    v.XDSPatientIdDoesNotMatch,
                    f"folder {target} referenced by the submission set belongs to another patient",
                    assoc.id,
                )
            return
        folder = plan.existing_folders.get(source)
        if folder is not None:
            # adding a document to an existing folder (ITI TF-3 §4.2.2.1.8)
            if folder.status != v.STATUS_APPROVED:
                yield XdsError(v.XDSRegistryMetadataError, f"folder {source} is not Approved", assoc.id)
            if folder.patient_id != plan.patient_id:
                yield XdsError(
                    v.XDSPatientIdDoesNotMatch, f"folder {source} belongs to another patient", assoc.id
                )
            plan.touched_folders.add(source)
        doc = plan.existing_docs.get(target)
        if doc is not None and doc.patient_id != plan.patient_id:
            yield XdsError(
                v.XDSPatientIdDoesNotMatch, f"document {target} belongs to another patient", assoc.id
            )
        source_obj = by_id.get(source)
        if isinstance(source_obj, RegistryPackage) and source_obj.is_folder:
            plan.touched_folders.add(source)

    # ---------------------------------------------------------------------------------------------
    def _store(self, conn: Connection, plan: _Plan, prepared: _SubmissionRows, now: str) -> None:
        ss = plan.sub.submission_sets[0]
        # Replacement: deprecate the originals and their addenda/transformations, and carry the
        # originals' folder membership over to the replacements (ITI TF-3 §4.2.2.2.1).
        if plan.deprecate:
            self._deprecate(conn, plan, ss, now)
        prepared.insert(conn, plan.extra_associations)
        existing_touched = plan.touched_folders - {f.id for f in plan.sub.folders}
        if existing_touched:
            _touch_folders(conn, existing_touched, now)

    def _deprecate(self, conn: Connection, plan: _Plan, ss: RegistryPackage, now: str) -> None:
        originals = list(dict.fromkeys(plan.deprecate))
        to_deprecate = set(originals)
        frontier = list(originals)
        while frontier:
            rows = conn.execute(
                select(t.associations.c.source).where(
                    t.associations.c.target.in_(frontier), t.associations.c.type.in_(_DEPENDENT_TYPES)
                )
            ).all()
            frontier = [r.source for r in rows if r.source not in to_deprecate]
            to_deprecate.update(frontier)
        _set_document_status(conn, to_deprecate, v.STATUS_DEPRECATED)

        replacements = {
            a.target_object: a.source_object
            for a in plan.sub.associations
            if a.association_type in v.REPLACING_TYPES
        }
        memberships = conn.execute(
            select(t.associations.c.source, t.associations.c.target)
            .join(t.folders, t.folders.c.uuid == t.associations.c.source)
            .where(t.associations.c.target.in_(originals), t.associations.c.type == v.HAS_MEMBER)
        ).all()
        for folder_uuid, original in memberships:
            replacement = replacements.get(original)
            if replacement is None:
                continue
            member = Association(
                id=new_uuid(),
                association_type=v.HAS_MEMBER,
                source_object=folder_uuid,
                target_object=replacement,
            )
            link = Association(
                id=new_uuid(),
                association_type=v.HAS_MEMBER,
                source_object=ss.id,
                target_object=member.id,
            )
            member.status = link.status = v.STATUS_APPROVED
            plan.extra_associations += [member, link]
            plan.touched_folders.add(folder_uuid)


# -------------------------------------------------------------------------------------------------
# id assignment
# -------------------------------------------------------------------------------------------------
def assign_uuids(sub: Submission) -> dict[str, str]:
    """Give every object a ``urn:uuid`` id, rewriting all references (ITI TF-3 §4.1.12.3)."""
    mapping: dict[str, str] = {}
    for obj in sub.objects:
        if not obj.id.startswith("urn:uuid:"):
            mapping[obj.id] = new_uuid()

    def lowered(ref: str) -> str:
        # UUIDs are case-insensitive on input and lower case as stored (RFC 4122 §3): one object
        # cannot come in again under another spelling of its entryUUID
        return ref.lower() if ref.startswith("urn:uuid:") else ref

    def fix(ref: str) -> str:
        found = mapping.get(ref)
        return found if found is not None else lowered(ref)

    seen = {fix(obj.id) for obj in sub.objects}
    for obj in sub.objects:
        obj.id = fix(obj.id)
        if isinstance(obj, Association):
            obj.source_object = fix(obj.source_object)
            obj.target_object = fix(obj.target_object)
        if isinstance(obj, Classification):
            obj.classified_object = fix(obj.classified_object)
        for c in obj.classifications:
            c.id = lowered(c.id)
            if not c.id.startswith("urn:uuid:") or c.id in seen:
                c.id = new_uuid()
            seen.add(c.id)
            c.classified_object = obj.id
        for e in obj.external_ids:
            e.id = lowered(e.id)
            if not e.id.startswith("urn:uuid:") or e.id in seen:
                e.id = new_uuid()
            seen.add(e.id)
            e.registry_object = obj.id
    return mapping


def _rewrite_patient_id(sub: Submission, surviving: str) -> None:
    for obj in sub.objects:
        for e in obj.external_ids:
            if e.identification_scheme in (v.DE_PATIENT_ID, v.SS_PATIENT_ID, v.FOLDER_PATIENT_ID):
                e.value = surviving


# -------------------------------------------------------------------------------------------------
# reading what the registry holds
# -------------------------------------------------------------------------------------------------
def _object_kinds(conn: Connection, ids: set[str]) -> dict[str, str]:
    """The kind (document, submissionset, folder, association) of each id the registry holds."""
    ids = {i for i in ids if i.startswith("urn:uuid:")}
    if not ids:
        return {}
    r = t.registry_objects.c
    return {row.uuid: row.kind for row in conn.execute(select(r.uuid, r.kind).where(r.uuid.in_(ids)))}


def _load_documents(conn: Connection, ids: set[str]) -> dict[str, StoredDocument]:
    """Relationship targets, locked on PostgreSQL so concurrent replacements serialise."""
    if not ids:
        return {}
    d = t.documents.c
    query = select(d.uuid, d.lid, d.seq, d.status, d.patient_id).where(d.uuid.in_(ids))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {r.uuid: StoredDocument(r.uuid, r.lid, r.seq, r.status, r.patient_id) for r in conn.execute(query)}


def _load_folders(conn: Connection, ids: set[str]) -> dict[str, StoredFolder]:
    if not ids:
        return {}
    f = t.folders.c
    query = select(f.uuid, f.seq, f.status, f.patient_id).where(f.uuid.in_(ids))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {r.uuid: StoredFolder(r.uuid, r.seq, r.status, r.patient_id) for r in conn.execute(query)}


_CLAIM = {
    "postgresql": Prepared(
        pg_insert(t.document_hashes)
        .on_conflict_do_nothing(index_elements=["unique_id"])
        .returning(t.document_hashes.c.unique_id),
        ["unique_id", "hash"],
    ),
    "sqlite": Prepared(
        sqlite_insert(t.document_hashes)
        .on_conflict_do_nothing(index_elements=["unique_id"])
        .returning(t.document_hashes.c.unique_id),
        ["unique_id", "hash"],
    ),
}


def _claim_document_unique_ids(conn: Connection, docs: list[DocumentEntry]) -> list[XdsError]:
    """Bind each DocumentEntry uniqueId to its hash, once and for all.

    A uniqueId already bound is a resubmission: accepted with the same hash, refused with
    XDSNonIdenticalHash otherwise (ITI TF-2 §3.42.4.1.3.3).
    """
    if not docs:
        return []
    wanted = {doc.unique_id or "": ((doc.hash or "").lower() or None, doc) for doc in docs}
    claim = _CLAIM[conn.dialect.name]
    # in one order everywhere, so that two submissions claiming the same ids wait, not deadlock
    claimed = {claim.scalar(conn, {"unique_id": uid, "hash": wanted[uid][0]}) for uid in sorted(wanted)}
    taken = wanted.keys() - claimed
    if not taken:
        return []
    h = t.document_hashes.c
    stored = {
        r.unique_id: r.hash for r in conn.execute(select(h.unique_id, h.hash).where(h.unique_id.in_(taken)))
    }
    errors = []
    for uid in sorted(taken):
        digest, doc = wanted[uid]
        known = stored.get(uid)
        if digest is None or known is None:
            errors.append(
                XdsError(
                    v.XDSDuplicateUniqueIdInRegistry, f"document uniqueId {uid} is already registered", doc.id
                )
            )
        elif known != digest:
            errors.append(
                XdsError(
                    v.XDSNonIdenticalHash,
                    f"document uniqueId {uid} is registered with hash {known}, this submission has {digest}",
                    doc.id,
                )
            )
    return errors


# -------------------------------------------------------------------------------------------------
# writing
# -------------------------------------------------------------------------------------------------
def _settle(sub: Submission, now: str) -> None:
    """What the registry sets on accepted objects: Approved, folder lastUpdateTime, and the first
    version of a logical entry of its own — lid = id, ``rim:VersionInfo`` "1" (ITI TF-3 §4.1.x;
    a new version of an existing entry is ITI-57's, not ITI-42's)."""
    for folder in sub.folders:
        folder.set_slot("lastUpdateTime", [now])
    for obj in sub.objects:
        if isinstance(obj, DocumentEntry | RegistryPackage | Association):
            obj.status = v.STATUS_APPROVED
            obj.lid = obj.id
            obj.version_name = "1"


# Statements compiled once per dialect and run on the driver's cursor (``xds.database.statements``).
_INSERT_DOCUMENT = Prepared(insert(t.documents).returning(t.documents.c.seq), rows.DOCUMENT_COLUMNS)
_INSERT_SUBMISSION_SET = Prepared(
    insert(t.submission_sets).returning(t.submission_sets.c.seq), rows.SUBMISSION_SET_COLUMNS
)
_INSERT_FOLDER = Prepared(insert(t.folders).returning(t.folders.c.seq), rows.FOLDER_COLUMNS)
_INSERT_DOCUMENT_CODES = Prepared(insert(t.document_codes), ["doc_seq", "kind", "value"])
_INSERT_SS_AUTHORS = Prepared(insert(t.submission_set_authors), ["ss_seq", "author_person"])
_INSERT_FOLDER_CODES = Prepared(insert(t.folder_codes), ["folder_seq", "value"])
_INSERT_ASSOCIATIONS = Prepared(insert(t.associations), rows.ASSOCIATION_COLUMNS)
_INSERT_OBJECTS = Prepared(insert(t.registry_objects), ["uuid", "kind"])


def _parent_seq(parent: Table) -> Any:
    """The seq PostgreSQL just gave a row of ``parent`` in this session (its sequence's currval)."""
    return literal_column(f"currval(pg_get_serial_sequence('{parent.name}', 'seq'))")  # schema names only


# PostgreSQL: children take their parent's seq from its sequence, so no statement waits for the
# one before it and a submission's rows go to the server in one pipeline (one round trip)
_PIPELINED_DOCUMENT = Prepared(insert(t.documents), rows.DOCUMENT_COLUMNS)
_PIPELINED_DOCUMENT_CODES = Prepared(
    insert(t.document_codes).values(
        doc_seq=_parent_seq(t.documents), kind=bindparam("kind"), value=bindparam("value")
    )
)
_PIPELINED_SUBMISSION_SET = Prepared(insert(t.submission_sets), rows.SUBMISSION_SET_COLUMNS)
_PIPELINED_SS_AUTHORS = Prepared(
    insert(t.submission_set_authors).values(
        ss_seq=_parent_seq(t.submission_sets), author_person=bindparam("author_person")
    )
)
_PIPELINED_FOLDER = Prepared(insert(t.folders), rows.FOLDER_COLUMNS)
_PIPELINED_FOLDER_CODES = Prepared(
    insert(t.folder_codes).values(folder_seq=_parent_seq(t.folders), value=bindparam("value"))
)


@dataclass
class _SubmissionRows:
    """The rows of one submission, fragments included, built before its transaction begins."""

    documents: list[tuple[rows.Row, list[rows.Row]]]
    submission_sets: list[tuple[rows.Row, list[rows.Row]]]
    folders: list[tuple[rows.Row, list[rows.Row]]]
    associations: list[rows.Row]
    kinds: list[rows.Row]

    @classmethod
    def of(cls, sub: Submission) -> _SubmissionRows:
        kinds: list[rows.Row] = [{"uuid": d.id, "kind": "document"} for d in sub.documents]
        sets, folders = [], []
        for pkg in sub.packages:
            if pkg.is_submission_set:
                sets.append((rows.submission_set_row(pkg), rows.submission_set_author_rows(pkg, 0)))
                kinds.append({"uuid": pkg.id, "kind": "submissionset"})
            else:
                folders.append((rows.folder_row(pkg), rows.folder_code_rows(pkg, 0)))
                kinds.append({"uuid": pkg.id, "kind": "folder"})
        kinds += [{"uuid": a.id, "kind": "association"} for a in sub.associations]
        return cls(
            documents=[(rows.document_row(d), rows.document_code_rows(d, 0)) for d in sub.documents],
            submission_sets=sets,
            folders=folders,
            associations=[rows.association_row(a) for a in sub.associations],
            kinds=kinds,
        )

    def insert(self, conn: Connection, extra_associations: list[Association]) -> None:
        associations, kinds = self._associations_and_kinds(extra_associations)
        if conn.dialect.name == "postgresql":
            self._insert_pipelined(conn, associations, kinds)
            return
        for row, codes in self.documents:
            _insert_with_children(conn, _INSERT_DOCUMENT, row, _INSERT_DOCUMENT_CODES, codes, "doc_seq")
        for row, authors in self.submission_sets:
            _insert_with_children(conn, _INSERT_SUBMISSION_SET, row, _INSERT_SS_AUTHORS, authors, "ss_seq")
        for row, codes in self.folders:
            _insert_with_children(conn, _INSERT_FOLDER, row, _INSERT_FOLDER_CODES, codes, "folder_seq")
        _INSERT_ASSOCIATIONS.execute_many(conn, associations)
        _INSERT_OBJECTS.execute_many(conn, kinds)

    def _associations_and_kinds(self, extra: list[Association]) -> tuple[list[rows.Row], list[rows.Row]]:
        """The association rows and registry_objects rows, with ``extra`` associations added."""
        if not extra:
            return self.associations, self.kinds
        return (
            self.associations + [rows.association_row(a) for a in extra],
            self.kinds + [{"uuid": a.id, "kind": "association"} for a in extra],
        )

    def _insert_pipelined(
        self, conn: Connection, associations: list[rows.Row], kinds: list[rows.Row]
    ) -> None:
        dialect = conn.dialect
        driver = conn.connection.driver_connection
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            with driver.pipeline():  # type: ignore[union-attr]
                for parent, child, parents in (
                    (_PIPELINED_DOCUMENT, _PIPELINED_DOCUMENT_CODES, self.documents),
                    (_PIPELINED_SUBMISSION_SET, _PIPELINED_SS_AUTHORS, self.submission_sets),
                    (_PIPELINED_FOLDER, _PIPELINED_FOLDER_CODES, self.folders),
                ):
                    for row, children in parents:
                        parent.queue(cursor, dialect, [row])
                        child.queue(cursor, dialect, children)
                _INSERT_ASSOCIATIONS.queue(cursor, dialect, associations)
                _INSERT_OBJECTS.queue(cursor, dialect, kinds)
        except dialect.loaded_dbapi.Error as exc:  # as Connection.execute would raise it
            raise DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()


def _insert_with_children(
    conn: Connection, parent: Prepared, row: rows.Row, child: Prepared, children: list[rows.Row], key: str
) -> None:
    seq = parent.scalar(conn, row)
    for c in children:
        c[key] = seq
    child.execute_many(conn, children)


def _rewrite_fragment(xml: bytes, change: Callable[[RegistryObject], None]) -> bytes:
    """Re-render a stored fragment after changing its object (status, lastUpdateTime)."""
    from xds import safexml

    obj = ebrim.parse_object(safexml.parse(xml))
    assert isinstance(obj, RegistryObject)
    change(obj)
    return ebrim.to_bytes(obj)


def _set_document_status(conn: Connection, uuids: set[str], status: str) -> None:
    d = t.documents.c
    rows = conn.execute(select(d.seq, d.xml).where(d.uuid.in_(uuids))).all()

    def set_status(obj: RegistryObject) -> None:
        obj.status = status

    for row in rows:
        conn.execute(
            update(t.documents)
            .where(d.seq == row.seq)
            .values(status=status, xml=_rewrite_fragment(row.xml, set_status))
        )


def _touch_folders(conn: Connection, uuids: set[str], now: str) -> None:
    """Folders that gained members get a new lastUpdateTime (ITI TF-3 §4.2.3.4.3).

    The value only moves forward: a second change within the same second (DTM has no finer
    precision) gets the next second, so a consumer comparing lastUpdateTime sees every change.
    """
    f = t.folders.c
    found = conn.execute(select(f.seq, f.xml, f.last_update_time).where(f.uuid.in_(uuids))).all()
    for row in found:
        stamp = _after(row.last_update_time, now)

        def set_time(obj: RegistryObject, stamp: str = stamp) -> None:
            obj.set_slot("lastUpdateTime", [stamp])

        conn.execute(
            update(t.folders)
            .where(f.seq == row.seq)
            .values(last_update_time=stamp, xml=_rewrite_fragment(row.xml, set_time))
        )


def _after(previous: str | None, now: str) -> str:
    """``now``, or one second after ``previous`` when that is not earlier than ``now``."""
    if not previous or previous < now:
        return now
    moved = datetime.strptime(previous[:14].ljust(14, "0"), "%Y%m%d%H%M%S") + timedelta(seconds=1)
    return moved.strftime("%Y%m%d%H%M%S")


def _short(urn: str) -> str:
    return urn.rsplit(":", 1)[-1]
