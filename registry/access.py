"""What the trust model needs to know of stored documents: whose they are and what the policy says.

The decision itself is the trust model's (:class:`xds.trust.policy.AccessPolicy`, ITI TF-2 §3.40.4.2);
this module reads the facts it decides on — each document's patient, class code and confidentiality
codes — from the registry's tables. It implements :class:`xds.trust.enforcement.DocumentFacts`.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, select

from xds.registry import schema as t
from xds.trust.assertion import TrustAttributes
from xds.trust.policy import AccessPolicy


class RegistryDocumentFacts:
    """Patient, class and confidentiality of stored documents, read from the registry database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def owners(self, unique_ids: Iterable[str]) -> list[tuple[str, str]]:
        """(uniqueId, patient id) of each stored document among ``unique_ids``."""
        d = t.documents.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(d.unique_id, d.patient_id).where(d.unique_id.in_(list(unique_ids))))
            return [(uid, patient) for uid, patient in rows]

    def refused(
        self,
        policy: AccessPolicy,
        who: TrustAttributes,
        *,
        uuids: Iterable[str] = (),
        unique_ids: Iterable[str] = (),
    ) -> set[str]:
        """The documents (by the identifiers given) this request may not see."""
        d, c = t.documents.c, t.document_codes.c
        uuids, unique_ids = set(uuids), set(unique_ids)
        if not uuids and not unique_ids:
            return set()
        cond = d.uuid.in_(uuids) if uuids else d.unique_id.in_(unique_ids)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(d.seq, d.uuid, d.unique_id, d.patient_id, d.class_code).where(cond)
            ).all()
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
