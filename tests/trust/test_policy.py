"""The access policy as a pure function: one requester, one object's stored facts, one action."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from xds import samples
from xds.trust.assertion import TrustAttributes
from xds.trust.policy import (
    DEFAULT_RULES,
    AccessPolicy,
    ObjectFacts,
    Requester,
    national_id,
    rule_from_table,
)

PERSON = "13116900216"
PATIENT = samples.patient_cx(PERSON)
OTHER = samples.patient_cx("29698496140")
LAB = "C00-1^^2.16.578.1.12.4.1.1.9602"
POLICY = AccessPolicy()


def clinician(**over: str) -> Requester:
    base = dict(
        subject_id="Kari Lege",
        hpr_number="9144900",
        role="LE",
        healthcare_service="S03",
        organisation_id="983971636",
        purpose_of_use="TREAT",
        resource_id=PATIENT,
    )
    base.update(over)
    return Requester(TrustAttributes(**base), PATIENT)  # type: ignore[arg-type]


def citizen(subject: str = PERSON) -> Requester:
    return Requester(
        TrustAttributes(subject_id=subject, purpose_of_use="PATRQT", resource_id=PATIENT), PATIENT
    )


def doc(patient: str = PATIENT, cls: str = LAB, *conf: str) -> ObjectFacts:
    return ObjectFacts("document", patient, cls, tuple(f"{c}^^2.16.578.1.12.4.1.1.9603" for c in conf))


def test_the_readme_prints_the_built_in_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"```toml\n(\[\[trust\.rule\]\].*?)```", readme, re.S)
    assert block is not None
    tables = tomllib.loads(block.group(1))["trust"]["rule"]
    assert tuple(rule_from_table(t) for t in tables) == DEFAULT_RULES


def test_another_patients_object_is_refused_by_the_patient_rule() -> None:
    decision = POLICY.decide(clinician(), doc(OTHER))
    assert not decision and decision.rule == "patient"
    assert not POLICY.decide(citizen(), ObjectFacts("submissionset", OTHER))


@pytest.mark.parametrize(
    ("over", "rule", "why"),
    [
        ({"role": "HE", "hpr_number": ""}, "care-read", "role 'HE'"),
        ({"hpr_number": ""}, "care-read", "HPR"),
        ({"hpr_number": "ikke-et-nummer"}, "care-read", "HPR"),
        ({"healthcare_service": ""}, "care-read", "care relationship"),
        ({"purpose_of_use": "CURIOUS"}, "no-rule", "CURIOUS"),
    ],
)
def test_role_hpr_care_relationship_and_purpose(over: dict[str, str], rule: str, why: str) -> None:
    decision = POLICY.decide(clinician(**over), doc())
    assert not decision and decision.rule == rule and why in decision.explain()


def test_classes_and_confidentiality_for_care() -> None:
    assert POLICY.decide(clinician(), doc())
    assert POLICY.decide(clinician(role="LE^Lege^2.16.578.1.12.4.1.1.9060"), doc())
    assert POLICY.decide(clinician(hpr_number="urn:oid:2.16.578.1.12.4.1.4.4:9144900"), doc())
    assert not POLICY.decide(clinician(), doc(PATIENT, "A00-1^^2.16.578.1.12.4.1.1.9602"))
    assert POLICY.decide(clinician(), doc(PATIENT, LAB, "NORU"))
    assert POLICY.decide(clinician(), doc(PATIENT, LAB, "NORS")).rule == "care-read"
    assert not POLICY.decide(clinician(), doc(PATIENT, LAB, "NORS"))
    # emergency needs no care relationship; break the glass is allowed and marked
    assert POLICY.decide(clinician(purpose_of_use="ETREAT", healthcare_service=""), doc())
    btg = POLICY.decide(clinician(purpose_of_use="BTG"), doc())
    assert btg and btg.mark == "break-the-glass"


@pytest.mark.parametrize(
    "spelling",
    [
        PERSON,
        PATIENT,
        f"urn:oid:2.16.578.1.12.4.1.4.1:{PERSON}",
        f" {PERSON} ",
        f"{PERSON}^^^NHN&2.16.578.1.12.4.1.4.1&ISO",
    ],
)
def test_a_citizen_in_any_spelling_sees_their_own_record_but_not_noru(spelling: str) -> None:
    assert national_id(spelling) == PERSON
    assert POLICY.decide(citizen(spelling), doc(PATIENT, "A00-1^^2.16.578.1.12.4.1.1.9602"))
    assert POLICY.decide(citizen(spelling), doc(PATIENT, LAB, "NORU")).rule == "citizen-own-record"
    assert not POLICY.decide(citizen(spelling), doc(PATIENT, LAB, "NORU"))
    assert not POLICY.decide(citizen(spelling), doc(PATIENT, LAB, "NORS"))


def test_a_citizen_is_not_someone_else_nor_a_writer() -> None:
    assert not POLICY.decide(citizen("29698496140"), doc())
    assert not POLICY.decide(citizen(f"urn:oid:2.16.578.1.12.4.1.4.2:{PERSON[:-1]}"), doc())
    assert national_id(f"{PERSON}^^^&1.2.3&ISO") == ""  # another assigning authority
    assert POLICY.decide(citizen(), doc(), "write").rule == "no-rule"


def test_writes_and_changes() -> None:
    assert POLICY.decide(clinician(), doc(), "write")
    assert POLICY.decide(clinician(role="SEKR"), doc(), "write").rule == "care-write"
    owned = ObjectFacts("document", PATIENT, LAB, (), frozenset({"983971636"}))
    assert POLICY.decide(clinician(), owned, "remove")
    assert POLICY.decide(clinician(organisation_id="2.16.578.1.12.4.1.4.101:983971636"), owned, "update")
    refused = POLICY.decide(clinician(organisation_id="974633574"), owned, "remove")
    assert not refused and refused.rule == "owner-changes"


def test_bench_trust_runs_the_whole_enforcement_path(capsys: pytest.CaptureFixture[str]) -> None:
    """``xds bench trust`` end to end at a small size: verification, replay record and the
    access policy's decision (it stops if the policy refused its own request)."""
    from support import run_bench

    assert run_bench("trust", "--requests", "5") == 0
    out = capsys.readouterr().out
    assert "enforcement path" in out and "policy" in out and "RSA-2048" in out
