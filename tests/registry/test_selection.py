"""xds.registry.selection: stored-query SQL compiled once per shape, values bound per request."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert

from xds.database import QuickReads, write_transaction
from xds.registry import schema as t
from xds.registry import selection
from xds.registry.selection import Selections, Where, match_pattern

_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
_DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"


def _document(seq: int, patient: str, status: str, class_code: str, created: str) -> dict[str, object]:
    return {
        "seq": seq,
        "uuid": f"urn:uuid:00000000-0000-4000-8000-{seq:012d}",
        "lid": f"urn:uuid:00000000-0000-4000-8000-{seq:012d}",
        "unique_id": f"1.2.3.{seq}",
        "patient_id": patient,
        "status": status,
        "object_type": "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
        "class_code": class_code,
        "creation_time": created,
        "xml": f"<doc{seq}/>".encode(),
    }


@pytest.fixture
def filled(engine: Engine) -> Engine:
    docs = [
        _document(1, "p1", _APPROVED, "A^^s", "20240101000000"),
        _document(2, "p1", _DEPRECATED, "B^^s", "20240201000000"),
        _document(3, "p1", _APPROVED, "B^^s", "20240301000000"),
        _document(4, "p2", _APPROVED, "A^^s", "20240401000000"),
    ]
    codes = [
        {"doc_seq": 1, "kind": "event", "value": "E1^^s"},
        {"doc_seq": 3, "kind": "event", "value": "E2^^s"},
        {"doc_seq": 1, "kind": "author", "value": "^Hansen^Kari"},
        {"doc_seq": 3, "kind": "author", "value": "^hansen^Ola"},
        {"doc_seq": 4, "kind": "author", "value": "^Ha*sen^Per"},
    ]
    with write_transaction(engine) as conn:
        conn.execute(insert(t.documents), docs)
        conn.execute(insert(t.document_codes), codes)
    return engine


def _seqs(engine: Engine, selections: Selections, where: Where, **kw: object) -> list[int]:
    with QuickReads(engine).connection() as conn:
        rows = selections.rows(conn, engine.dialect, t.documents, ("seq", "uuid", "xml"), where, **kw)  # type: ignore[arg-type]
    return [row[0] for row in rows]


def test_one_shape_answers_each_request_with_its_own_values(filled: Engine) -> None:
    sel = Selections()
    assert _seqs(filled, sel, Where().one_of("patient_id", ["p1"]).one_of("status", [_APPROVED])) == [1, 3]
    assert _seqs(filled, sel, Where().one_of("patient_id", ["p2"]).one_of("status", [_APPROVED])) == [4]
    assert _seqs(filled, sel, Where().one_of("patient_id", ["p1"]).one_of("status", [_DEPRECATED])) == [2]
    assert len(sel._compiled) == 1  # one shape, compiled once
    # more values is another shape
    both = Where().one_of("patient_id", ["p1"]).one_of("status", [_APPROVED, _DEPRECATED])
    assert _seqs(filled, sel, both) == [1, 2, 3]
    assert len(sel._compiled) == 2


def test_values_are_bound_not_written_into_the_sql(filled: Engine) -> None:
    sel = Selections()
    hostile = "p1' OR '1'='1"
    assert _seqs(filled, sel, Where().one_of("patient_id", [hostile])) == []
    ((sql, *_),) = sel._compiled.values()
    assert "'" not in sql and "1=" not in sql


def test_conditions(filled: Engine, backend: str) -> None:
    sel = Selections()
    sqlite = backend == "sqlite"
    w = Where().one_of("patient_id", ["p1"]).at_least("creation_time", "20240201000000")
    assert _seqs(filled, sel, w.below("creation_time", "20240301000000")) == [
        2
    ]  # From inclusive, To exclusive
    assert _seqs(filled, sel, Where().document_code("event", ["E1^^s", "E2^^s"])) == [1, 3]
    assert _seqs(filled, sel, Where().document_code("event", ["E2^^s"]).one_of("class_code", ["A^^s"])) == []
    assert _seqs(
        filled, sel, Where().either("uuid", "lid", ["urn:uuid:00000000-0000-4000-8000-000000000004"])
    ) == [4]
    assert _seqs(filled, sel, Where().one_of("patient_id", [])) == []
    assert _seqs(filled, sel, Where().one_of("patient_id", ["p1"]).never()) == []
    # author patterns: case-sensitive on both backends, the wildcards are % and _, '*' is literal
    assert _seqs(filled, sel, Where().document_author(["%Hansen%"], sqlite=sqlite)) == [1]
    assert _seqs(filled, sel, Where().document_author(["%Hansen%", "%hansen%"], sqlite=sqlite)) == [1, 3]
    assert _seqs(filled, sel, Where().document_author(["^Ha_sen%"], sqlite=sqlite)) == [1, 4]
    assert _seqs(filled, sel, Where().document_author(["^Ha*sen%"], sqlite=sqlite)) == [4]
    # order and limit
    assert _seqs(filled, sel, Where().one_of("class_code", ["A^^s", "B^^s"]), limit=2) == [1, 2]
    assert sorted(_seqs(filled, sel, Where().one_of("status", [_APPROVED]), ordered=False)) == [1, 3, 4]


def test_the_number_of_shapes_kept_is_bounded(filled: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "MAX_SHAPES", 3)
    sel = Selections()
    for n in range(1, 8):
        values = ["p1"] + [f"x{i}" for i in range(n - 1)]
        assert _seqs(filled, sel, Where().one_of("patient_id", values)) == [1, 2, 3]
    assert len(sel._compiled) == 3
    # a very long statement is not kept, whatever room is left
    monkeypatch.setattr(selection, "MAX_SHAPES", 1024)
    many = ["p1"] + [f"x{i}" for i in range(6000)]
    assert _seqs(filled, sel, Where().one_of("patient_id", many)) == [1, 2, 3]
    assert len(sel._compiled) == 3


def test_match_pattern() -> None:
    assert match_pattern("^Ha_sen%", sqlite=True) == "^Ha?sen*"
    assert match_pattern("a*b?[c", sqlite=True) == "a[*]b[?][[]c"
    assert match_pattern("a\\b%", sqlite=False) == "a\\\\b%"


def test_patient_merges_are_followed_by_the_statement_as_the_directory_follows_them(engine: Engine) -> None:
    """Where.patient resolves ITI-8 merges inside the SELECT; it finds exactly what the
    identifiers PatientDirectory gives (the forms, the survivor, those merged into it) find."""
    from sqlalchemy import select

    from xds.registry.patients import PatientDirectory, canonical_cx

    def cx(n: str) -> str:
        return f"{n}^^^&1.2.3&ISO"

    merges = {"X1": "X2", "X2": "X3", "X3": None, "V1": "X3", "Y1": "Y2", "Z1": None}  # Y2: dangling
    with write_transaction(engine) as conn:
        conn.execute(
            insert(t.patients),
            [
                {"pid": cx(k), "merged_into": cx(m) if m else None, "updated": "20240101"}
                for k, m in merges.items()
            ],
        )
        filed = ["X1", "X2", "X3", "V1", "Y1", "Y2", "Z1", "W"]  # W: never fed
        conn.execute(
            insert(t.documents),
            [_document(i + 1, cx(n), _APPROVED, "A^^s", "20240101000000") for i, n in enumerate(filed)],
        )
    directory = PatientDirectory(engine)

    def by_directory(given: str) -> list[int]:
        ids = {given, canonical_cx(given)}
        survivor = directory.resolve(given)
        if survivor is not None:
            ids.add(survivor)
            with engine.connect() as conn:
                ids.update(
                    conn.execute(
                        select(t.patients.c.pid).where(t.patients.c.merged_into == survivor)
                    ).scalars()
                )
        return _seqs(engine, Selections(), Where().one_of("patient_id", sorted(ids)))

    sel = Selections()
    for name in [*filed, "Q"]:
        for given in (cx(name), f" {name}^^^NS&1.2.3&ISO"):  # canonical, and another form of it
            found = _seqs(engine, sel, Where().patient("patient_id", given, canonical_cx(given)))
            assert found == by_directory(given), given
    # spelled out: the survivor X3 finds X2 and V1 (merged into it) and itself; X1 finds the same
    x3 = _seqs(engine, sel, Where().patient("patient_id", cx("X3"), cx("X3")))
    assert x3 == [2, 3, 4]
    assert _seqs(engine, sel, Where().patient("patient_id", cx("X1"), cx("X1"))) == [1, 2, 3, 4]
    assert _seqs(engine, sel, Where().patient("patient_id", cx("Y1"), cx("Y1"))) == [5, 6]
    assert _seqs(engine, sel, Where().patient("patient_id", cx("W"), cx("W"))) == [8]
