"""The patient directory: ITI-8 registrations and A40 merges (ITI TF-2 §3.8)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select

from xds.registry.patients import PatientDirectory, canonical_cx
from xds.registry.schema import patients

OID = "1.2.3.4.5"
A = f"A1^^^&{OID}&ISO"
B = f"B2^^^&{OID}&ISO"
C = f"C3^^^&{OID}&ISO"


def _row(engine: Engine, pid: str):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(patients).where(patients.c.pid == pid)).first()


def test_canonical_cx_drops_namespace_and_other_components() -> None:
    assert canonical_cx(f"X9^^^HOSP&{OID}&ISO") == f"X9^^^&{OID}&ISO"
    assert canonical_cx(f"X9^1^M11^&{OID}&ISO^MR^FAC") == f"X9^^^&{OID}&ISO"
    assert canonical_cx(f"X9^^^&{OID}") == f"X9^^^&{OID}&ISO"


@pytest.mark.parametrize("text", ["", "X9", f"^^^&{OID}&ISO", "X9^^^HOSP"])
def test_canonical_cx_needs_id_and_oid(text: str) -> None:
    with pytest.raises(ValueError):
        canonical_cx(text)


def test_register_and_resolve(engine: Engine) -> None:
    d = PatientDirectory(engine)
    assert d.resolve(A) is None
    assert not d.is_known(A)
    d.register(
        f"A1^^^NS&{OID}&ISO", family_name="Nordmann", given_name="Kari", birth_date="19800101", sex="F"
    )
    assert d.resolve(A) == A
    assert d.is_known(f"A1^^^OTHER&{OID}&ISO")
    row = _row(engine, A)
    assert (row.family_name, row.given_name, row.birth_date, row.sex) == ("Nordmann", "Kari", "19800101", "F")
    assert len(row.updated) == 14 and row.updated.isdigit()


def test_register_updates_only_given_demographics(engine: Engine) -> None:
    d = PatientDirectory(engine)
    d.register(A, family_name="Nordmann", given_name="Kari", sex="F")
    d.register(A, family_name="Hansen")
    row = _row(engine, A)
    assert (row.family_name, row.given_name, row.sex) == ("Hansen", "Kari", "F")


def test_resolve_unparseable_is_unknown(engine: Engine) -> None:
    assert PatientDirectory(engine).resolve("no-authority") is None


def test_merge_resolves_to_survivor_and_creates_unknown_ids(engine: Engine) -> None:
    d = PatientDirectory(engine)
    d.merge(A, B)
    assert d.resolve(A) == B
    assert d.resolve(B) == B
    assert _row(engine, B).merged_into is None


def test_merge_chain(engine: Engine) -> None:
    d = PatientDirectory(engine)
    for pid in (A, B, C):
        d.register(pid)
    d.merge(A, B)
    d.merge(B, C)
    assert d.resolve(A) == C
    assert d.resolve(B) == C
    assert _row(engine, A).merged_into == C  # marks point straight at the survivor


def test_merge_into_merged_id_follows_it(engine: Engine) -> None:
    d = PatientDirectory(engine)
    d.merge(B, C)
    d.merge(A, B)
    assert d.resolve(A) == C


def test_register_does_not_unmerge(engine: Engine) -> None:
    d = PatientDirectory(engine)
    d.merge(A, B)
    d.register(A, family_name="Again")
    assert d.resolve(A) == B
    assert _row(engine, A).family_name == "Again"


def test_merge_into_itself_is_an_error(engine: Engine) -> None:
    with pytest.raises(ValueError):
        PatientDirectory(engine).merge(A, f"A1^^^NS&{OID}&ISO")


def test_merge_cycle_is_an_error(engine: Engine) -> None:
    d = PatientDirectory(engine)
    d.merge(A, B)
    d.merge(B, C)
    with pytest.raises(ValueError):
        d.merge(C, A)
    with pytest.raises(ValueError):
        d.merge(C, B)
    assert d.resolve(C) == C
    assert d.resolve(A) == C


def test_resolve_is_guarded_against_cycles(engine: Engine) -> None:
    d = PatientDirectory(engine)
    d.register(A)
    d.register(B)
    with engine.begin() as conn:  # a cycle no merge would make, written behind the directory's back
        conn.execute(patients.update().where(patients.c.pid == A).values(merged_into=B))
        conn.execute(patients.update().where(patients.c.pid == B).values(merged_into=A))
    with pytest.raises(ValueError):
        d.resolve(A)


def test_concurrent_registrations_of_one_id(engine: Engine) -> None:
    d = PatientDirectory(engine)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            d.register(A, family_name=f"N{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert d.resolve(A) == A
