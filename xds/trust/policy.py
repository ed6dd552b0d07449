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
