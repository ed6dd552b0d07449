"""Access policy: which documents a verified request may see (the trust model's decision point).

The Norwegian default (``shared/profiles/norway.md``): lab results (class C00-1) and radiology
(E00-1) are readable for TREAT, ETREAT and COC; BTG (break the glass) is allowed but logged as
such; documents with confidentiality NORS (sperret) never leave; a citizen reading their own record
(the assertion's subject is the patient) sees everything of theirs except NORU (utsatt innsyn).
Confidentiality codes are recognised by code, under the Volven 9603 or HL7 5.25 systems.

Decisions apply to ITI-18 answers (objects filtered out of LeafClass and ObjectRef responses) and to
ITI-43 requests (a refused document is refused before anything is read).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from xds.trust.assertion import TrustAttributes

log = logging.getLogger("xds.trust.policy")

CONFIDENTIALITY_SYSTEMS = ("2.16.578.1.12.4.1.1.9603", "2.16.840.1.113883.5.25")


@dataclass(frozen=True)
class AccessPolicy:
    readable_classes: frozenset[str] = frozenset({"C00-1", "E00-1"})
    purposes: frozenset[str] = frozenset({"TREAT", "ETREAT", "COC", "BTG"})
    never_released: frozenset[str] = frozenset({"NORS"})
    hidden_from_citizen: frozenset[str] = frozenset({"NORU"})
    logged_purposes: frozenset[str] = field(default_factory=lambda: frozenset({"BTG"}))

    def allows(
        self, who: TrustAttributes, patient: str, class_code: str, confidentiality: Iterable[str]
    ) -> bool:
        """Whether ``who`` may see a document of ``patient`` with these codes (``code^^system`` forms)."""
        conf = {
            c.split("^^")[0]
            for c in confidentiality
            if c.split("^^")[-1] in CONFIDENTIALITY_SYSTEMS or "^^" not in c
        }
        if conf & self.never_released:
            return False
        citizen = bool(who.subject_id) and who.subject_id.split("^")[0] == patient.split("^")[0]
        if citizen:
            return not (conf & self.hidden_from_citizen)
        if who.purpose_of_use not in self.purposes:
            return False
        if class_code.split("^^")[0] not in self.readable_classes:
            return False
        if who.purpose_of_use in self.logged_purposes:
            log.warning(
                "break-the-glass access by %s (%s) to a document of %s",
                who.subject_id,
                who.organisation_id,
                patient,
            )
        return True


def refused_documents(
    engine: Engine,
    policy: AccessPolicy,
    who: TrustAttributes,
    *,
    uuids: Iterable[str] = (),
    unique_ids: Iterable[str] = (),
) -> set[str]:
    """The documents (by the identifiers given) this request may not see."""
    from registry import schema as t

    d, c = t.documents.c, t.document_codes.c
    uuids, unique_ids = set(uuids), set(unique_ids)
    if not uuids and not unique_ids:
        return set()
    cond = d.uuid.in_(uuids) if uuids else d.unique_id.in_(unique_ids)
    with engine.connect() as conn:
        rows = conn.execute(select(d.seq, d.uuid, d.unique_id, d.patient_id, d.class_code).where(cond)).all()
        seqs = [r.seq for r in rows]
        conf: dict[int, list[str]] = {}
        if seqs:
            for seq, value in conn.execute(
                select(c.doc_seq, c.value).where(c.doc_seq.in_(seqs), c.kind == "conf")
            ):
                conf.setdefault(seq, []).append(value)
    refused = set()
    for r in rows:
        if not policy.allows(who, r.patient_id, r.class_code or "", conf.get(r.seq, [])):
            refused.add(r.uuid if uuids else r.unique_id)
    return refused
