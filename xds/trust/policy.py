"""The access policy: may this verified requester read, write or change this one object?

The trust model's decision point (ITI TF-2 §3.40.4.2, X-Service Provider; the attributes are the
national trust framework's, ``shared/profiles/norway.md``). :meth:`AccessPolicy.decide` is a pure
function of the verified requester, one stored object's facts (its patient with ITI-8 merges
followed, class code, confidentiality codes, owning institutions) and the action; the actors read
the facts from what they store (``xds.registry.access``) and apply the decision *after* selecting
what a request asks for, so the spelling of a request cannot change what is released.

The decision, in order:

1. **patient** (built in): the object's patient is the assertion's patient (``resource-id``).
2. **the rule table**: the first rule whose ``purposes`` and ``actions`` cover the request decides;
   the request is allowed when every requirement of that rule holds, else refused by that rule.
3. **no-rule** (built in): no rule covers this purpose of use and action — refused.

A requester whose purpose of use is a citizen purpose (``PATRQT`` by default) is a citizen, covered
only by the rules that say ``citizen = true`` (and other requesters never by them); such a rule
requires the subject to be the patient, recognised by the national id in any of its common
spellings (11 digits, a CX, ``urn:oid:<oid>:<id>``).
Every refusal names its rule; an allowed decision under a rule with ``mark`` is logged as such
(break the glass).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xds.trust.assertion import TrustAttributes

log = logging.getLogger("xds.trust.policy")

READ, WRITE, UPDATE, REMOVE = "read", "write", "update", "remove"
ACTIONS = (READ, WRITE, UPDATE, REMOVE)
DOCUMENT = "document"

CONFIDENTIALITY_SYSTEMS = ("2.16.578.1.12.4.1.1.9603", "2.16.840.1.113883.5.25")
# personal identifiers: fødselsnummer, D-nummer, H-nummer (shared/profiles/norway.md)
PERSON_ID_OIDS = ("2.16.578.1.12.4.1.4.1", "2.16.578.1.12.4.1.4.2", "2.16.578.1.12.4.1.4.3")
HPR_OID = "2.16.578.1.12.4.1.4.4"
ORGANISATION_OID = "2.16.578.1.12.4.1.4.101"
ROLE_SYSTEM = "2.16.578.1.12.4.1.1.9060"  # Volven 9060 Kategori helsepersonell

PATIENT_RULE = "patient"
NO_RULE = "no-rule"


def identifier(value: str, oids: Iterable[str] = ()) -> str:
    """The id number in one of the common spellings of an identifier: plain (``13116900216``), a CX
    (``13116900216^^^&2.16.578.1.12.4.1.4.1&ISO``), an II-like ``oid:id`` or
    ``urn:oid:2.16.578.1.12.4.1.4.1:13116900216``; ``""`` when the spelling names another
    assigning authority than ``oids`` (when given)."""
    text = value.strip()
    authority = ""
    if "^" in text:
        parts = text.split("^")
        text = parts[0].strip()
        if len(parts) > 3:
            authority = parts[3].split("&")[1] if "&" in parts[3] else parts[3]
    elif ":" in text:
        authority, _, text = text.removeprefix("urn:oid:").rpartition(":")
    oids = tuple(oids)
    if authority and oids and authority.strip() not in oids:
        return ""
    return text


def national_id(value: str) -> str:
    """The 11-digit personal identifier in ``value`` (any common spelling), or ``""``."""
    found = identifier(value, PERSON_ID_OIDS)
    return found if re.fullmatch(r"[0-9]{11}", found) else ""


def hpr_number(value: str) -> str:
    """The HPR number (health personnel register) in ``value`` (any common spelling), or ``""``."""
    found = identifier(value, (HPR_OID,))
    return found if re.fullmatch(r"[0-9]{1,9}", found) else ""


def organisation_number(value: str) -> str:
    """The organisation number (Enhetsregisteret) in ``value`` (plain, II ``oid:n``, CX/XON), or ``""``."""
    text = value.strip()
    if "^" in text:  # XON: the number is the last component (XON.10)
        text = text.split("^")[-1]
    found = identifier(text, (ORGANISATION_OID,))
    return found if re.fullmatch(r"[0-9]{9}", found) else ""


def role_code(value: str) -> str:
    """The code of a role attribute: ``LE``, ``LE^Lege^2.16.578.1.12.4.1.1.9060`` (CE) or
    ``urn:oid:2.16.578.1.12.4.1.1.9060:LE``."""
    text = value.strip()
    if "^" in text:
        return text.split("^")[0].strip()
    if text.startswith("urn:oid:"):
        return text.rpartition(":")[2]
    return text


def code_of(coded: str) -> str:
    """The code of a stored ``code^^scheme`` value."""
    return coded.split("^^")[0]


@dataclass(frozen=True)
class Requester:
    """A verified requester: the assertion's attributes and its patient with merges followed."""

    attributes: TrustAttributes
    patient: str  # the assertion's resource-id, canonical, resolved to the surviving identifier


@dataclass(frozen=True)
class ObjectFacts:
    """What the policy decides on, as stored: one document entry, submission set or folder."""

    kind: str  # "document" | "submissionset" | "folder"
    patient: str  # the stored patient, resolved to the surviving identifier
    class_code: str = ""  # "code^^scheme" (documents)
    confidentiality: tuple[str, ...] = ()  # "code^^scheme" values (documents)
    owners: frozenset[str] = frozenset()  # organisation numbers that may change or remove it


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str = ""
    mark: str = ""

    def __bool__(self) -> bool:
        return self.allowed

    def explain(self) -> str:
        """The refusal in words, naming the rule (for SOAP fault reasons and XDS errors)."""
        return f"refused by access rule {self.rule!r}: {self.reason}"


@dataclass(frozen=True)
class Rule:
    """One row of the policy table (``[[trust.rule]]``). Empty lists mean "any"."""

    name: str
    purposes: frozenset[str] = frozenset()  # applies to these purposes of use
    actions: frozenset[str] = frozenset()  # applies to these actions (read, write, update, remove)
    citizen: bool = False  # for citizens; requires: the subject is the patient (national id, any spelling)
    roles: frozenset[str] = frozenset()  # requires: the role (Volven 9060 code) is one of these
    requires_hpr: bool = False  # requires: an HPR number (health-personnel authorisation)
    requires_care_relationship: bool = False  # requires: healthcare service or decision reference
    requires_owner: bool = False  # requires: the requester's organisation owns the object
    classes: frozenset[str] = frozenset()  # documents: classCode is one of these
    confidentiality: frozenset[str] = frozenset()  # documents: every confidentiality code among these
    refuse_confidentiality: frozenset[str] = frozenset()  # documents with one of these are refused
    mark: str = ""  # allowed decisions are logged with this mark (e.g. "break-the-glass")

    def covers(self, purpose: str, action: str, citizen: bool) -> bool:
        """Whether the rule decides this request: citizens' rules for citizens, others for others."""
        return (
            self.citizen == citizen
            and (not self.purposes or purpose in self.purposes)
            and (not self.actions or action in self.actions)
        )

    def unmet(self, who: TrustAttributes, patient: str, obj: ObjectFacts) -> str:
        """The first requirement ``who`` does not meet for ``obj``, in words; ``""`` when all hold."""
        if self.citizen and (
            not national_id(who.subject_id) or national_id(who.subject_id) != national_id(patient)
        ):
            return "the subject is not the patient (a citizen sees only their own record)"
        if self.roles and role_code(who.role) not in self.roles:
            return f"role {role_code(who.role) or '(none)'!r} is not one of {', '.join(sorted(self.roles))}"
        if self.requires_hpr and not hpr_number(who.hpr_number):
            return "an HPR number (health-personnel authorisation) is required"
        if self.requires_care_relationship and not (who.healthcare_service or who.decision_ref):
            return "a care relationship (healthcare service or decision reference) is required"
        if self.requires_owner and organisation_number(who.organisation_id) not in obj.owners:
            return "only the institution that submitted the entry or owns the repository may change it"
        if obj.kind != DOCUMENT:
            return ""
        if self.classes and code_of(obj.class_code) not in self.classes:
            return f"class {code_of(obj.class_code) or '(none)'!r} is not one of {', '.join(sorted(self.classes))}"
        codes = confidentiality_codes(obj.confidentiality)
        if codes & self.refuse_confidentiality:
            return f"confidentiality {', '.join(sorted(codes & self.refuse_confidentiality))} is not released"
        if self.confidentiality and not codes <= self.confidentiality:
            return f"confidentiality {', '.join(sorted(codes - self.confidentiality))} is not released"
        return ""


def confidentiality_codes(values: Iterable[str]) -> set[str]:
    """The confidentiality codes among ``code^^system`` values (Volven 9603 or HL7 5.25, or no system)."""
    return {code_of(c) for c in values if "^^" not in c or c.split("^^")[-1] in CONFIDENTIALITY_SYSTEMS}


CLINICAL_ROLES = frozenset({"LE", "SP", "JO", "PS", "TL", "FT", "RA", "BI"})
CLINICAL_READ = dict(
    roles=CLINICAL_ROLES,
    requires_hpr=True,
    classes=frozenset({"C00-1", "E00-1"}),
    refuse_confidentiality=frozenset({"NORS"}),
)

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        "citizen-own-record",
        actions=frozenset({READ}),
        citizen=True,
        refuse_confidentiality=frozenset({"NORS", "NORU"}),
    ),
    Rule(
        "care-read",
        purposes=frozenset({"TREAT", "COC"}),
        actions=frozenset({READ}),
        requires_care_relationship=True,
        **CLINICAL_READ,  # type: ignore[arg-type]
    ),
    Rule("emergency-read", purposes=frozenset({"ETREAT"}), actions=frozenset({READ}), **CLINICAL_READ),  # type: ignore[arg-type]
    Rule(
        "break-the-glass",
        purposes=frozenset({"BTG"}),
        actions=frozenset({READ}),
        mark="break-the-glass",
        **CLINICAL_READ,  # type: ignore[arg-type]
    ),
    Rule(
        "care-write",
        purposes=frozenset({"TREAT", "ETREAT", "COC"}),
        actions=frozenset({WRITE}),
        roles=CLINICAL_ROLES,
        requires_hpr=True,
    ),
    Rule(
        "owner-changes",
        purposes=frozenset({"TREAT", "ETREAT", "COC"}),
        actions=frozenset({UPDATE, REMOVE}),
        requires_owner=True,
    ),
)


@dataclass(frozen=True)
class AccessPolicy:
    """The rule table and the purposes of use that make a requester a citizen."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    citizen_purposes: frozenset[str] = field(default_factory=lambda: frozenset({"PATRQT"}))

    def decide(self, who: Requester, obj: ObjectFacts, action: str = READ) -> Decision:
        """May ``who`` perform ``action`` on ``obj``? The refusing rule is named (a pure function)."""
        attrs = who.attributes
        if not obj.patient or obj.patient != who.patient:
            return Decision(False, PATIENT_RULE, "the object belongs to another patient than the assertion's")
        purpose = attrs.purpose_of_use
        citizen = purpose in self.citizen_purposes
        for rule in self.rules:
            if rule.covers(purpose, action, citizen):
                unmet = rule.unmet(attrs, obj.patient, obj)
                if unmet:
                    return Decision(False, rule.name, unmet)
                return Decision(True, rule.name, mark=rule.mark)
        return Decision(False, NO_RULE, f"no rule lets purpose of use {purpose!r} {action}")

    @classmethod
    def from_table(cls, rules: Iterable[Mapping[str, Any]], citizen_purposes: Iterable[str]) -> AccessPolicy:
        """The policy from ``[[trust.rule]]`` tables (checked: unknown keys and actions are errors)."""
        return cls(tuple(rule_from_table(r) for r in rules), frozenset(citizen_purposes))


_LISTS = ("purposes", "actions", "roles", "classes", "confidentiality", "refuse_confidentiality")
_FLAGS = ("citizen", "requires_hpr", "requires_care_relationship", "requires_owner")


def rule_from_table(table: Mapping[str, Any]) -> Rule:
    """One ``[[trust.rule]]`` table as a :class:`Rule`; ValueError naming what is wrong."""
    name = str(table.get("name", "")).strip()
    if not name:
        raise ValueError("every [[trust.rule]] needs a name")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "name":
            continue
        if key in _LISTS:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError(f"[[trust.rule]] {name}: {key} must be a list of strings")
            values[key] = frozenset(i.strip() for i in items if i.strip())
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"[[trust.rule]] {name}: {key} must be true or false")
            values[key] = value
        elif key == "mark":
            values[key] = str(value)
        else:
            raise ValueError(f"[[trust.rule]] {name}: unknown key {key!r}")
    unknown = values.get("actions", frozenset()) - set(ACTIONS)
    if unknown:
        raise ValueError(
            f"[[trust.rule]] {name}: unknown actions {sorted(unknown)}; use {', '.join(ACTIONS)}"
        )
    return Rule(name, **values)


def rule_to_table(rule: Rule) -> dict[str, Any]:
    """A rule as its ``[[trust.rule]]`` table (only what differs from the defaults)."""
    out: dict[str, Any] = {"name": rule.name}
    for key in (*_LISTS[:2], *_FLAGS, *_LISTS[2:], "mark"):
        value = getattr(rule, key)
        if value:
            out[key] = sorted(value) if isinstance(value, frozenset) else value
    return out


def log_decision(decision: Decision, who: TrustAttributes, what: str) -> None:
    """Break-the-glass (a marked rule) is logged at WARNING; refusals at INFO, with the rule."""
    if decision.allowed and decision.mark:
        log.warning(
            "%s: %s (%s) read %s of %s under rule %r",
            decision.mark,
            who.subject_id,
            who.organisation_id,
            what,
            who.resource_id,
            decision.rule,
        )
    elif not decision.allowed:
        log.info("%s withheld from %s: %s", what, who.subject_id, decision.explain())
