"""Authorisation on the registry's data: the facts the access policy decides on, read as stored.

The decision is the trust model's (:meth:`xds.trust.policy.AccessPolicy.decide`, ITI TF-2
§3.40.4.2); this module reads what it decides on from the registry's tables — each object's
patient (ITI-8 merges followed, ITI TF-2 §3.8.4.2), class code, confidentiality codes and the
institution that submitted it — and applies the decisions:

- reads (ITI-18, ITI-51): :meth:`RegistryAccess.release` keeps, of the objects a stored query
  selected, those the requester may see; an association only when both its ends are released;
- writes (ITI-42, and ITI-41 through the repository): :meth:`RegistryAccess.check_submission`;
- changes of stored entries (deprecation by RPLC, ITI-57 updates, ITI-62 deletions):
  :meth:`RegistryAccess.check_change`, which a transaction calls with the entryUUIDs it changes,
  and :meth:`RegistryAccess.record_submitter`, which it calls for the objects it creates.

A request without a verified assertion (trust ``off``, or ``optional`` without a Security header)
has no requester (:meth:`RegistryAccess.requester` is None) and is not filtered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, select

from xds.database import reader
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.model import RegistryObject, Submission
from xds.registry import schema as t
from xds.registry.patients import PatientDirectory, canonical_cx
from xds.trust.assertion import TrustAttributes
from xds.trust.policy import (
    DOCUMENT,
    PATIENT_RULE,
    READ,
    UPDATE,
    WRITE,
    AccessPolicy,
    Decision,
    ObjectFacts,
    Requester,
    log_decision,
    organisation_number,
)

log = logging.getLogger("xds.registry.access")

_CHUNK = 500
_UNKNOWN = Decision(False, PATIENT_RULE, "no such object")


def requester_attributes(security: object) -> TrustAttributes | None:
    """The verified assertion's attributes of a request (``SoapRequest.security``), or None."""
    attributes = getattr(getattr(security, "assertion", None), "attributes", None)
    return attributes if isinstance(attributes, TrustAttributes) else None


class RegistryAccess:
    """The access policy applied to the registry's stored objects."""

    def __init__(self, engine: Engine, patients: PatientDirectory, policy: AccessPolicy) -> None:
        self.engine = engine
        self.reader = reader(engine)
        self.patients = patients
        self.policy = policy

    # --- who asks ---------------------------------------------------------------------------------
    def requester(self, security: object) -> Requester | None:
        """The verified requester of a request (its assertion's patient resolved), or None."""
        attributes = requester_attributes(security)
        if attributes is None:
            return None
        return Requester(attributes, self.survivor(attributes.resource_id))

    def survivor(self, pid: str, conn: Connection | None = None) -> str:
        """The surviving canonical identifier of ``pid`` (merges followed); ``""`` when it has none."""
        try:
            return self.patients.resolve(pid, conn) or canonical_cx(pid)
        except ValueError:
            return ""

    # --- reads ------------------------------------------------------------------------------------
    def release(self, who: Requester, hits: Sequence[Any]) -> list[Any]:
        """Of the objects a stored query selected (anything with ``uuid``), those ``who`` may see."""
        if not hits:
            return list(hits)
        decisions = self.decisions(who, [h.uuid for h in hits], READ)
        kept = [h for h in hits if decisions[h.uuid]]
        withheld = len(hits) - len(kept)
        if withheld:
            rules = sorted({d.rule for d in decisions.values() if not d})
            log.info(
                "%d of %d objects withheld from %s (rules %s)",
                withheld,
                len(hits),
                who.attributes.subject_id,
                ", ".join(rules),
            )
        for h in kept:
            decision = decisions[h.uuid]
            if decision.mark:
                log_decision(decision, who.attributes, f"object {h.uuid}")
        return kept

    def decisions(self, who: Requester, uuids: Iterable[str], action: str) -> dict[str, Decision]:
        """The policy's decision on each object (by entryUUID); an association is released when both
        its ends are, and refused by the rule that refused an end."""
        wanted = list(dict.fromkeys(uuids))
        with self.reader.connect() as conn:
            objects, links = self._facts(conn, wanted, owners=action != READ)
        decided = {uuid: self.policy.decide(who, facts, action) for uuid, facts in objects.items()}

        def decide(uuid: str, depth: int) -> Decision:
            found = decided.get(uuid)
            if found is not None:
                return found
            link = links.get(uuid)
            if link is None or depth > 3:
                return _UNKNOWN
            for end in link:
                end_decision = decide(end, depth + 1)
                if not end_decision:
                    return Decision(False, end_decision.rule, "an end of the association is withheld")
            decided[uuid] = Decision(True, "association")
            return decided[uuid]

        return {uuid: decide(uuid, 0) for uuid in wanted}

    def _facts(
        self, conn: Connection, uuids: list[str], *, owners: bool = False
    ) -> tuple[dict[str, ObjectFacts], dict[str, tuple[str, str]]]:
        """Facts of the objects named and of the ends of the associations named (three levels)."""
        objects: dict[str, ObjectFacts] = {}
        links: dict[str, tuple[str, str]] = {}
        todo = set(uuids)
        for _ in range(4):
            todo -= objects.keys() | links.keys()
            if not todo:
                break
            objects.update(self._objects(conn, todo, owners=owners))
            found = self._links(conn, todo - objects.keys())
            links.update(found)
            todo = {end for link in found.values() for end in link}
        return objects, links

    def _objects(self, conn: Connection, uuids: set[str], *, owners: bool = False) -> dict[str, ObjectFacts]:
        """Facts of the documents, submission sets and folders among ``uuids``; with ``owners``, the
        institutions that submitted any version of each (its logicalID's)."""
        out: dict[str, ObjectFacts] = {}
        pids: dict[str, str] = {}

        def patient(pid: str) -> str:
            if pid not in pids:
                pids[pid] = self.survivor(pid, conn)
            return pids[pid]

        d = t.documents.c
        docs = _rows(conn, t.documents, [d.seq, d.uuid, d.lid, d.patient_id, d.class_code], uuids)
        conf: dict[int, list[str]] = {}
        c = t.document_codes.c
        seqs = [r.seq for r in docs]
        for i in range(0, len(seqs), _CHUNK):
            query = select(c.doc_seq, c.value).where(c.doc_seq.in_(seqs[i : i + _CHUNK]), c.kind == "conf")
            for seq, value in conn.execute(query):
                conf.setdefault(seq, []).append(value)
        folders = _rows(conn, t.folders, [t.folders.c.uuid, t.folders.c.lid, t.folders.c.patient_id], uuids)
        sets = _rows(
            conn, t.submission_sets, [t.submission_sets.c.uuid, t.submission_sets.c.patient_id], uuids
        )
        who_submitted: dict[str, frozenset[str]] = {}
        if owners:
            who_submitted = {
                **self._owners_by_lid(conn, t.documents, docs),
                **self._owners_by_lid(conn, t.folders, folders),
                **self._submitters(conn, {r.uuid for r in sets}),
            }
        for r in docs:
            out[r.uuid] = ObjectFacts(
                DOCUMENT,
                patient(r.patient_id),
                r.class_code or "",
                tuple(conf.get(r.seq, ())),
                who_submitted.get(r.uuid, frozenset()),
            )
        for rows, kind in ((sets, "submissionset"), (folders, "folder")):
            for r in rows:
                out[r.uuid] = ObjectFacts(
                    kind, patient(r.patient_id), owners=who_submitted.get(r.uuid, frozenset())
                )
        return out

    def _owners_by_lid(self, conn: Connection, table: Table, rows: list[Any]) -> dict[str, frozenset[str]]:
        """Per row, the institutions that submitted any version of its logicalID (ITI-57 versions)."""
        lids = sorted({r.lid for r in rows})
        versions: list[Any] = []
        for i in range(0, len(lids), _CHUNK):
            query = select(table.c.uuid, table.c.lid).where(table.c.lid.in_(lids[i : i + _CHUNK]))
            versions += conn.execute(query).all()
        submitted = self._submitters(conn, {v.uuid for v in versions})
        by_lid: dict[str, set[str]] = {}
        for version in versions:
            by_lid.setdefault(version.lid, set()).update(submitted.get(version.uuid, ()))
        return {r.uuid: frozenset(by_lid.get(r.lid, ())) for r in rows}

    @staticmethod
    def _links(conn: Connection, uuids: set[str]) -> dict[str, tuple[str, str]]:
        a = t.associations.c
        return {
            r.uuid: (r.source, r.target)
            for r in _rows(conn, t.associations, [a.uuid, a.source, a.target], uuids)
        }

    @staticmethod
    def _submitters(conn: Connection, uuids: set[str]) -> dict[str, frozenset[str]]:
        s = t.object_submitters.c
        return {
            r.uuid: frozenset({r.organisation})
            for r in _rows(conn, t.object_submitters, [s.uuid, s.organisation], uuids)
        }

    def document_facts(self, repository_id: str, unique_ids: Iterable[str]) -> dict[str, ObjectFacts]:
        """The facts of the registry's entries of documents ``repository_id`` holds, by uniqueId."""
        d = t.documents.c
        ids = sorted(set(unique_ids))
        with self.reader.connect() as conn:
            pairs: list[Any] = []
            for i in range(0, len(ids), _CHUNK):
                query = select(d.unique_id, d.uuid).where(
                    d.unique_id.in_(ids[i : i + _CHUNK]), d.repository_unique_id == repository_id
                )
                pairs += conn.execute(query).all()
            objects = self._objects(conn, {uuid for _, uuid in pairs})
        return {uid: objects[uuid] for uid, uuid in pairs if uuid in objects}

    # --- writes -----------------------------------------------------------------------------------
    def check_submission(self, who: Requester, sub: Submission) -> list[XdsError]:
        """Errors (``XDSRegistryError``, naming the rule) for each object of ``sub`` that ``who`` may
        not write, and each stored entry it would deprecate that ``who`` may not change."""
        errors: list[XdsError] = []
        objects: list[tuple[str, RegistryObject]] = [
            *((DOCUMENT, d) for d in sub.documents),
            *(("submissionset", s) for s in sub.submission_sets),
            *(("folder", f) for f in sub.folders),
        ]
        with self.reader.connect() as conn:
            pids: dict[str, str] = {}
            for kind, obj in objects:
                pid = getattr(obj, "patient_id", None) or ""
                if pid not in pids:
                    pids[pid] = self.survivor(pid, conn)
                facts = ObjectFacts(
                    kind,
                    pids[pid],
                    _code(obj, v.DE_CLASS_CODE),
                    tuple(_codes(obj, v.DE_CONFIDENTIALITY_CODE)),
                )
                decision = self.policy.decide(who, facts, WRITE)
                if not decision:
                    errors.append(XdsError(v.XDSRegistryError, f"{obj.id}: {decision.explain()}", obj.id))
        # a replacement deprecates the stored entry it points to: a change of that entry
        changed = [
            a.target_object.lower() for a in sub.associations if a.association_type in v.REPLACING_TYPES
        ]
        if changed:
            errors += self.check_change(who, changed, UPDATE)
        for error in errors:
            log.info("write refused for %s: %s", who.attributes.subject_id, error.context)
        return errors

    def check_update(self, who: Requester, sub: Submission) -> list[XdsError]:
        """ITI-57 / ITI-92 (ITI TF-2b §3.57.4.1.3): the new versions and set must be ``who``'s to
        write, and the stored entries they supersede, and those whose status they change, ``who``'s
        to change (the institution that submitted them)."""
        errors = self.check_submission(who, sub)
        d, f = t.documents.c, t.folders.c
        lids = sorted({o.lid for o in (*sub.documents, *sub.folders) if o.lid})
        with self.reader.connect() as conn:
            stored = [
                *conn.execute(select(d.uuid).where(d.lid.in_(lids))).scalars(),
                *conn.execute(select(f.uuid).where(f.lid.in_(lids))).scalars(),
            ]
        changed = [
            a.target_object.lower()
            for a in sub.associations
            if a.association_type == v.UPDATE_AVAILABILITY_STATUS
        ]
        return errors + self.check_change(who, [*stored, *changed], UPDATE)

    def check_change(self, who: Requester, uuids: Iterable[str], action: str = UPDATE) -> list[XdsError]:
        """The hook for transactions that change or remove stored objects (deprecation, ITI-57,
        ITI-62): an ``XDSRegistryError`` naming the rule for each entryUUID ``who`` may not
        ``action`` (``update`` or ``remove``); stored objects only (unknown ones are the caller's)."""
        decisions = self.decisions(who, uuids, action)
        return [
            XdsError(v.XDSRegistryError, f"{uuid}: {decision.explain()}", uuid)
            for uuid, decision in decisions.items()
            if not decision and decision is not _UNKNOWN
        ]

    @staticmethod
    def record_submitter(conn: Connection, who: Requester | None, uuids: Iterable[str]) -> None:
        """Record ``who``'s organisation as the submitter of the new objects ``uuids`` (inside the
        transaction that stores them); nothing without a verified requester."""
        org = organisation_number(who.attributes.organisation_id) if who is not None else ""
        rows = [{"uuid": u, "organisation": org} for u in dict.fromkeys(uuids)]
        if org and rows:
            conn.execute(insert(t.object_submitters), rows)

    def recording(self, who: Requester | None, sub: Submission) -> Callable[[Connection], None] | None:
        """A ``within`` callback for :meth:`xds.registry.register.Registrar.register_together` that
        records the submitter of every object of ``sub`` (entryUUIDs are final when it runs)."""
        if who is None:
            return None

        def record(conn: Connection) -> None:
            uuids = [o.id for o in (*sub.documents, *sub.submission_sets, *sub.folders, *sub.associations)]
            self.record_submitter(conn, who, uuids)

        return record


def _rows(conn: Connection, table: Table, columns: list[Any], uuids: Iterable[str]) -> list[Any]:
    ids = sorted(set(uuids))
    out: list[Any] = []
    for i in range(0, len(ids), _CHUNK):
        out += conn.execute(select(*columns).where(table.c.uuid.in_(ids[i : i + _CHUNK]))).all()
    return out


def _code(obj: RegistryObject, scheme: str) -> str:
    found = obj.code(scheme)
    return found.as_query_value() if found is not None else ""


def _codes(obj: RegistryObject, scheme: str) -> list[str]:
    return [c.as_query_value() for c in obj.codes(scheme)]
