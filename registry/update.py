"""ITI-57 Update Document Set and ITI-92 Restricted Update Document Set: the Document Registry's side.

ITI TF-2b §3.57.4.1.3 (Metadata Update option, ITI TF-3 §4.1.x) and ITI TF-2 §3.92.4.1.3 (RMU). An
update is an ``lcm:SubmitObjectsRequest`` with one SubmissionSet and any of:

- a new version of a DocumentEntry or Folder: the object with the ``lid`` of the stored entry and a
  new id, a SubmissionSet HasMember to it with slots ``SubmissionSetStatus`` (Original, for a
  document) and ``PreviousVersion`` (the newest stored version) and optionally
  ``AssociationPropagation`` (yes/no, default yes). The registry stores it as version n + 1 with the
  previous version's status, and deprecates the previous version in the same transaction
  (:mod:`xds.registry.versions`); with propagation, the folder memberships of the previous version
  are carried to the new one;
- an ``UpdateAvailabilityStatus`` association from the SubmissionSet to a stored DocumentEntry,
  Folder (newest version) or Association, with slots ``OriginalStatus`` and ``NewStatus``
  (Approved ↔ Deprecated); it is acted on, not stored;
- new associations between stored objects (APND, a folder's HasMember, ...), each with its
  SubmissionSet HasMember.

All of it is stored or none of it. Errors: a malformed operation is XDSMetadataUpdateOperationError;
a logicalId the registry does not hold or a PreviousVersion that is not the newest version is
XDSMetadataVersionError (of two updates racing to make the same version, the second gets it); a
new version with another uniqueId is XDSMetadataIdentifierError; a status update whose original
status is not the stored one, or of a version that is not the newest, and a new version of a
Deprecated entry (which only a restricted update may make), are XDSMetadataUpdateError;
objects of two patients brought together is XDSPatientIDReconciliationError. A restricted update
(ITI-92) may make new DocumentEntry versions only, and may not change what identifies the entry
or its document (UnmodifiableMetadataError).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from xds.database import run_blocking
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.model import Association, DocumentEntry, RegistryObject, RegistryPackage, Submission
from xds.metadata.validation import validate_submission
from xds.registry import schema as t
from xds.registry import versions
from xds.registry.register import (
    Registrar,
    _object_kinds,
    _SubmissionRows,
    _touch_folders,
    assign_uuids,
    new_uuid,
)

PREVIOUS_VERSION = "PreviousVersion"
ASSOCIATION_PROPAGATION = "AssociationPropagation"
SUBMISSION_SET_STATUS = "SubmissionSetStatus"
ORIGINAL_STATUS = "OriginalStatus"
NEW_STATUS = "NewStatus"
_CHANGEABLE_STATUSES = frozenset({v.STATUS_APPROVED, v.STATUS_DEPRECATED})

# What a restricted update may not change in a DocumentEntry (ITI TF-2 §3.92.4.1.3): the entry's
# and its document's identity, where the document is, and whether it can be retrieved.
_UNMODIFIABLE_SLOTS = ("repositoryUniqueId", "sourcePatientId", "documentAvailability")


def _operation_error(text: str, location: str = "") -> XdsError:
    return XdsError(v.XDSMetadataUpdateOperationError, text, location)


@dataclass
class NewVersion:
    """A new version of a stored DocumentEntry or Folder, as the request names it."""

    obj: DocumentEntry | RegistryPackage
    member: Association  # the SubmissionSet's HasMember, with PreviousVersion
    previous: int
    propagate: bool


@dataclass
class StatusChange:
    """An UpdateAvailabilityStatus association (ITI TF-2b §3.57.4.1.3.3.3)."""

    assoc: Association
    original: str
    new: str


@dataclass
class UpdateRequest:
    """An update, read and checked as it stands (no database)."""

    submission: Submission  # what will be stored: the set, new versions, new associations
    versions: list[NewVersion]
    changes: list[StatusChange]
    restricted: bool
    supplied_uuids: set[str] = field(default_factory=set)
    invalid: list[XdsError] = field(default_factory=list)  # (restricted) refused after the RMU rules


def read_update(
    sub: Submission, *, restricted: bool, validate: Callable[[Submission], list[XdsError]]
) -> UpdateRequest:
    """The operations of ``sub`` or XdsException (ITI TF-2b §3.57.4.1.3.1, §3.57.4.1.3.3)."""
    errors: list[XdsError] = []
    sets = sub.submission_sets
    if len(sets) != 1:
        raise XdsException.of(v.XDSRegistryMetadataError, "an update carries exactly one SubmissionSet")
    ss = sets[0]
    changes: list[StatusChange] = []
    stored: list[RegistryObject] = []
    for obj in sub.objects:
        if isinstance(obj, Association) and obj.association_type == v.UPDATE_AVAILABILITY_STATUS:
            change = _status_change(obj, ss, errors)
            if change is not None:
                changes.append(change)
        else:
            stored.append(obj)
    if restricted and changes:
        errors.append(_operation_error("a restricted update changes no status", changes[0].assoc.id))
    members = {
        a.target_object: a
        for a in sub.associations
        if a.association_type == v.HAS_MEMBER and a.source_object == ss.id
    }
    new_versions: list[NewVersion] = []
    for obj in sub.objects:
        if isinstance(obj, DocumentEntry) or (isinstance(obj, RegistryPackage) and obj.is_folder):
            if restricted and not isinstance(obj, DocumentEntry):
                errors.append(
                    _operation_error("a restricted update makes DocumentEntry versions only", obj.id)
                )
                continue
            found = _new_version(obj, members.get(obj.id), errors)
            if found is not None:
                new_versions.append(found)
    lids = [n.obj.lid for n in new_versions]
    for lid in sorted({x for x in lids if lids.count(x) > 1 and x}):
        errors.append(_operation_error(f"logicalId {lid} is updated twice in one submission", lid))
    # the ITI-42 rules, on what will be stored (associations between stored objects stand apart)
    in_message = {o.id for o in sub.objects}
    between_stored = {
        o.id
        for o in stored
        if isinstance(o, Association)
        and o.source_object not in in_message
        and o.target_object not in in_message
    }
    for oid in sorted(between_stored):
        assoc = next(o for o in stored if o.id == oid)
        assert isinstance(assoc, Association)
        if assoc.association_type not in v.ASSOCIATION_TYPES:
            errors.append(
                XdsError(
                    v.XDSRegistryMetadataError,
                    f"associationType {assoc.association_type!r} is not an XDS association type",
                    oid,
                )
            )
    checked = Submission(
        objects=[
            o
            for o in stored
            if o.id not in between_stored
            and not (isinstance(o, Association) and o.target_object in between_stored)
        ]
    )
    invalid = [e for e in validate(checked) if e.is_error]
    if not restricted:
        errors += invalid
    if errors:
        raise XdsException(errors)
    supplied = {o.id.lower() for o in stored if o.id.startswith("urn:uuid:")}
    # a restricted update first says what it may not change, then what else is wrong with it
    return UpdateRequest(Submission(objects=stored), new_versions, changes, restricted, supplied, invalid)


def _status_change(assoc: Association, ss: RegistryPackage, errors: list[XdsError]) -> StatusChange | None:
    original, new = assoc.slot_values(ORIGINAL_STATUS), assoc.slot_values(NEW_STATUS)
    problem = ""
    if assoc.source_object != ss.id:
        problem = "an UpdateAvailabilityStatus association comes from the SubmissionSet"
    elif len(original) != 1 or len(new) != 1:
        problem = "an UpdateAvailabilityStatus association needs one OriginalStatus and one NewStatus"
    elif original[0] not in _CHANGEABLE_STATUSES or new[0] not in _CHANGEABLE_STATUSES:
        problem = "OriginalStatus and NewStatus are Approved or Deprecated"
    elif not assoc.target_object.lower().startswith("urn:uuid:"):
        problem = "an UpdateAvailabilityStatus association names a stored object by its entryUUID"
    if problem:
        errors.append(_operation_error(problem, assoc.id))
        return None
    assoc.target_object = assoc.target_object.lower()
    return StatusChange(assoc, original[0], new[0])


def _new_version(
    obj: DocumentEntry | RegistryPackage, member: Association | None, errors: list[XdsError]
) -> NewVersion | None:
    """The version operation ``obj`` and its HasMember describe (ITI TF-2b §3.57.4.1.3.1.3)."""
    previous = member.slot_values(PREVIOUS_VERSION) if member is not None else []
    propagation = member.slot_values(ASSOCIATION_PROPAGATION) if member is not None else []
    status = member.slot_values(SUBMISSION_SET_STATUS) if member is not None else []
    problem = ""
    if member is None or not previous:
        problem = (
            f"{obj.id} has no SubmissionSet HasMember with a PreviousVersion: an update makes new "
            "versions of stored entries (register a first version with ITI-42)"
        )
    elif len(previous) != 1 or not previous[0].isascii() or not previous[0].isdigit() or previous[0] == "0":
        problem = f"PreviousVersion {previous!r} is not a version number"
    elif isinstance(obj, DocumentEntry) and status != ["Original"]:
        problem = (
            "the SubmissionSet HasMember of a new DocumentEntry version needs SubmissionSetStatus Original"
        )
    elif len(propagation) > 1 or (propagation and propagation[0] not in ("yes", "no")):
        problem = f"AssociationPropagation {propagation!r} is neither yes nor no"
    elif not obj.lid or not obj.lid.lower().startswith("urn:uuid:") or obj.lid == obj.id:
        problem = f"{obj.id} needs the logicalId (lid) of the stored entry it is a new version of"
    if problem:
        errors.append(_operation_error(problem, obj.id))
        return None
    assert member is not None and obj.lid is not None
    obj.lid = obj.lid.lower()
    return NewVersion(obj, member, int(previous[0]), propagation != ["no"])


class Updater:
    """ITI-57 and ITI-92 over one registry database, sharing the registrar's patients and commits."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    def prepare(self, sub: Submission, *, restricted: bool) -> _Update:
        request = read_update(
            sub,
            restricted=restricted,
            validate=lambda s: validate_submission(s, profile=self.registrar.validation),
        )
        assign_uuids(request.submission)
        for change in request.changes:  # the SubmissionSet may have been given a UUID
            change.assoc.source_object = request.submission.submission_sets[0].id
        return _Update(self.registrar, request, self.registrar.clock())

    async def update(
        self,
        sub: Submission,
        *,
        restricted: bool = False,
        recording: Callable[[Submission], Callable[[Connection], None] | None] | None = None,
    ) -> None:
        """Apply the update ``sub`` in one transaction, or raise XdsException having changed nothing.

        ``recording``, given what the update stores, may return work to run last in the same
        transaction (the access model records the submitter of the new objects there)."""
        job = await run_blocking(lambda: self.prepare(sub, restricted=restricted))
        if recording is not None:
            job.within = recording(job.request.submission)
        try:
            await self.registrar.commits.run(job.apply)
        except IntegrityError as exc:
            raise XdsException.of(
                v.XDSMetadataVersionError,
                "another update made a new version of this entry first; query it and update again",
            ) from exc


@dataclass
class _Update:
    registrar: Registrar
    request: UpdateRequest
    now: str
    touched: set[str] = field(default_factory=set)
    within: Callable[[Connection], None] | None = None

    def apply(self, conn: Connection) -> None:
        """Check against the registry and write; safe to run again in a new transaction."""
        self.touched = set()
        request = self.request
        sub = request.submission
        ss = sub.submission_sets[0]
        patient = self.registrar.resolve_patient(ss.patient_id or "", ss.id, conn)
        in_message = {o.id for o in sub.objects}
        kinds = _object_kinds(conn, request.supplied_uuids | _referenced(sub, in_message))
        errors = [
            XdsError(v.XDSRegistryMetadataError, f"entryUUID {oid} is already used in the registry", oid)
            for oid in sorted(request.supplied_uuids & kinds.keys())
        ]
        if errors:
            raise XdsException(errors)
        extra: list[Association] = []
        for new in request.versions:
            extra += self._new_version(conn, new, ss, patient)
        if request.invalid:
            raise XdsException(request.invalid)
        for change in request.changes:
            self._change_status(conn, change, patient)
        self._check_new_associations(conn, sub, kinds, in_message, patient)
        _settle(sub)
        _SubmissionRows.of(sub).insert(conn, extra)
        for new in request.versions:
            if isinstance(new.obj, DocumentEntry):
                versions.rebind_hash(conn, new.obj)
        touched = self.touched - in_message
        if touched:
            _touch_folders(conn, touched, self.now)
        if self.within is not None:
            self.within(conn)

    def _new_version(
        self, conn: Connection, new: NewVersion, ss: RegistryPackage, patient: str
    ) -> list[Association]:
        obj = new.obj
        is_doc = isinstance(obj, DocumentEntry)
        table = t.documents if is_doc else t.folders
        stored = versions.newest(conn, table, obj.lid or "")
        what = "DocumentEntry" if is_doc else "Folder"
        if stored is None:
            raise XdsException.of(
                v.XDSMetadataVersionError, f"no {what} with logicalId {obj.lid} is in the registry", obj.id
            )
        if stored.version != new.previous:
            raise XdsException.of(
                v.XDSMetadataVersionError,
                f"PreviousVersion {new.previous} is not the newest version of {obj.lid} ({stored.version})",
                obj.id,
            )
        if (obj.unique_id or "") != stored.unique_id:
            raise XdsException.of(
                v.XDSMetadataIdentifierError,
                f"a new version keeps the uniqueId {stored.unique_id} of {obj.lid}",
                obj.id,
            )
        if not self.request.restricted and stored.status != v.STATUS_APPROVED:
            # a Deprecated entry is changed by a restricted update only (ITI TF-2 §3.92, CP 1190)
            raise XdsException.of(
                v.XDSMetadataUpdateError,
                f"version {stored.version} of {obj.lid} is Deprecated; ITI-57 makes new versions of Approved entries",
                obj.id,
            )
        old_patient = self.registrar._survivor(stored.patient_id, conn)
        if self.request.restricted:
            _check_restricted(obj, stored, old_patient, patient)
        members = versions.memberships(conn, stored.uuid, as_target=is_doc)
        if old_patient != patient and members:
            raise XdsException.of(
                v.XDSPatientIDReconciliationError,
                f"{obj.lid} changes patient but {'is in' if is_doc else 'holds'} "
                f"{len(members)} folder membership(s) of the former patient",
                obj.id,
            )
        obj.version_name = str(stored.version + 1)
        obj.status = stored.status
        versions.deprecate(conn, table, stored)
        if not new.propagate:
            return []
        extra: list[Association] = []
        for link in members:  # the previous version's memberships, for the new one
            source, target = (link.source, obj.id) if is_doc else (obj.id, link.target)
            # (the SubmissionSet does not list the carried memberships, as the NIST kit's 20000d expects)
            extra.append(
                Association(
                    id=new_uuid(), association_type=v.HAS_MEMBER, source_object=source, target_object=target
                )
            )
            if is_doc:
                self.touched.add(source)
        for a in extra:
            a.status, a.lid, a.version_name = v.STATUS_APPROVED, a.id, "1"
        return extra

    def _change_status(self, conn: Connection, change: StatusChange, patient: str) -> None:
        target = change.assoc.target_object
        kind = _object_kinds(conn, {target}).get(target)
        location = change.assoc.id
        if kind is None:
            raise XdsException.of(v.XDSMetadataUpdateError, f"{target} is not in the registry", location)
        if kind == "submissionset":
            raise XdsException.of(
                v.XDSMetadataUpdateOperationError, "a SubmissionSet's status is not updated", location
            )
        table = {"document": t.documents, "folder": t.folders, "association": t.associations}[kind]
        if self._owners(conn, kind, target) - {patient}:
            raise XdsException.of(
                v.XDSPatientIDReconciliationError,
                f"{target} belongs to another patient than the SubmissionSet's",
                location,
            )
        current = versions.current(conn, table, target)
        if current.latest is False:
            raise XdsException.of(
                v.XDSMetadataUpdateError, f"{target} is not the newest version of its entry", location
            )
        if current.status != change.original:
            raise XdsException.of(
                v.XDSMetadataUpdateError,
                f"OriginalStatus {change.original} is not the status of {target} ({current.status})",
                location,
            )
        if change.new != current.status:
            versions.set_status(conn, table, current.seq, change.new)

    def _owners(self, conn: Connection, kind: str, oid: str) -> set[str]:
        """The patients (merges followed) whose objects ``oid`` is or joins: its own patient for a
        DocumentEntry or Folder, the patients of both ends for an Association."""
        if kind == "association":
            ends = conn.execute(
                select(t.associations.c.source, t.associations.c.target).where(t.associations.c.uuid == oid)
            ).one()
            kinds = _object_kinds(conn, set(ends))
            owners = {self._patient_of(conn, end, {}, kinds) for end in ends}
        else:
            table = t.documents if kind == "document" else t.folders
            owners = {conn.execute(select(table.c.patient_id).where(table.c.uuid == oid)).scalar()}
        return {self.registrar._survivor(p, conn) for p in owners if p}

    def _check_new_associations(
        self,
        conn: Connection,
        sub: Submission,
        kinds: dict[str, str],
        in_message: set[str],
        patient: str,
    ) -> None:
        """New associations between stored objects, or a stored one and this submission's (ITI TF-2b
        §3.57.4.1.3.3.4): both ends held, one patient, folders Approved."""
        ss = sub.submission_sets[0]
        by_id = sub.by_id()
        for assoc in sub.associations:
            if assoc.source_object == ss.id:
                continue
            ends = (assoc.source_object, assoc.target_object)
            missing = [e for e in ends if e not in in_message and e not in kinds]
            if missing:
                raise XdsException.of(
                    v.XDSRegistryMetadataError,
                    f"association {assoc.id} names {missing[0]}, which is neither in the update nor in the registry",
                    assoc.id,
                )
            if assoc.association_type in v.REPLACING_TYPES and not all(e in in_message for e in ends):
                raise XdsException.of(
                    v.XDSMetadataUpdateOperationError,
                    "a replacement is registered with ITI-42, not made by an update",
                    assoc.id,
                )
            pids = {self._patient_of(conn, e, by_id, kinds) for e in ends} - {None}
            pids = {self.registrar._survivor(p, conn) for p in pids if p} | ({patient} if pids else set())
            if len(pids) > 1:
                raise XdsException.of(
                    v.XDSPatientIDReconciliationError,
                    f"association {assoc.id} joins objects of different patients",
                    assoc.id,
                )
            if assoc.association_type == v.HAS_MEMBER and kinds.get(assoc.source_object) == "folder":
                folder = versions.current(conn, t.folders, assoc.source_object)
                if folder.status != v.STATUS_APPROVED:
                    raise XdsException.of(
                        v.XDSRegistryMetadataError, f"folder {assoc.source_object} is not Approved", assoc.id
                    )
                self.touched.add(assoc.source_object)

    @staticmethod
    def _patient_of(
        conn: Connection, oid: str, by_id: dict[str, RegistryObject], kinds: dict[str, str]
    ) -> str | None:
        obj = by_id.get(oid)
        if isinstance(obj, DocumentEntry | RegistryPackage):
            return obj.patient_id
        table = {"document": t.documents, "folder": t.folders, "submissionset": t.submission_sets}.get(
            kinds.get(oid, "")
        )
        if table is None:
            return None
        return conn.execute(select(table.c.patient_id).where(table.c.uuid == oid)).scalar()


def _referenced(sub: Submission, in_message: set[str]) -> set[str]:
    ends = {a.source_object for a in sub.associations} | {a.target_object for a in sub.associations}
    return {e for e in ends - in_message if e.startswith("urn:uuid:")}


def _check_restricted(obj: RegistryObject, stored: versions.Stored, old_patient: str, patient: str) -> None:
    """What ITI-92 may not change (ITI TF-2 §3.92.4.1.3): the patient (XDSPatientIDReconciliationError),
    the entry type, where the document is and whether it is available (UnmodifiableMetadataError)."""
    before = stored.parsed()
    if old_patient != patient or before.external_id(v.DE_PATIENT_ID) != obj.external_id(v.DE_PATIENT_ID):
        raise XdsException.of(
            v.XDSPatientIDReconciliationError,
            f"a restricted update keeps the patient of {stored.lid}",
            obj.id,
        )
    changed = []
    if (before.object_type or v.DOC_ENTRY_STABLE) != (obj.object_type or v.DOC_ENTRY_STABLE):
        changed.append("objectType")
    for name in _UNMODIFIABLE_SLOTS:
        if before.slot_values(name) != obj.slot_values(name):
            changed.append(name)
    if changed:
        raise XdsException.of(
            v.UnmodifiableMetadataError,
            f"a restricted update may not change {', '.join(changed)} of {stored.lid}",
            obj.id,
        )


def _settle(sub: Submission) -> None:
    """Status, lid and version of what an update stores besides its new versions."""
    for obj in sub.objects:
        if isinstance(obj, Association) or (isinstance(obj, RegistryPackage) and obj.is_submission_set):
            obj.status = v.STATUS_APPROVED
            obj.lid = obj.id
            obj.version_name = "1"


__all__ = ["Updater", "read_update", "UpdateRequest", "NewVersion", "StatusChange"]
