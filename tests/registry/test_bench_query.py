"""``xds bench query``'s pieces: the workloads it asks and the query plans it shows (the plans use indexes)."""

from __future__ import annotations

from sqlalchemy import Engine

from xds.bench.query import fill, plans, workloads


def test_plans_show_the_statements_a_find_documents_runs_and_they_use_the_index(engine: Engine) -> None:
    assert fill(engine, 2000) >= 2000
    loads = workloads(engine, 50)
    assert [w.name for w in loads] == [
        "FindDocuments LeafClass",
        "FindDocuments ObjectRef",
        "GetDocuments",
        "GetSubmissionSetAndContents",
    ]
    assert all(w.messages for w in loads)
    lines = plans(engine, loads[0].messages[0])
    assert "--" in lines  # at least one statement explained
    text = "\n".join(lines)
    assert "ix_documents_patient_status" in text, text


def test_bench_query_end_to_end_small(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The whole of ``xds bench query`` at two small sizes on SQLite: every figure next to its
    floor, the plan, and the p50 growth between the sizes."""
    import re

    from support import run_bench

    rc = run_bench(
        "query",
        "--sizes",
        "400,800",
        "--requests",
        "20",
        "--throughput-requests",
        "200",
        "--cache-dir",
        str(tmp_path),
        "--sqlite-only",
    )
    assert rc == 0
    out = capsys.readouterr().out
    figures = re.findall(
        r"p50 +[\d.]+ ms .* repeat p50 +[\d.]+ .* ([\d,]+) q/s  \| floor p50 +[\d.]+ ms +([\d,]+) q/s", out
    )
    assert len(figures) == 8, out  # four workloads at two sizes
    assert len(re.findall(r"first touch: database [\d,]+ MB, \d+% of it in the OS page cache", out)) == 8, out
    assert "ix_documents_patient_status" in out
    assert len(re.findall(r"p50 at 800 is [\d.]+x p50 at 400", out)) == 4, out


def test_author_and_event_code_filters_look_codes_up_by_document(engine: Engine) -> None:
    """An author pattern has no prefix to search by: the filter must read the candidate
    document's own rows (doc_seq, kind, value), not every author row of the registry."""
    from sqlalchemy import select

    from xds.bench.query import _slot, query_message
    from xds.metadata import vocabulary as v
    from xds.registry import query_params as qp
    from xds.registry import schema as t

    fill(engine, 2000)
    with engine.connect() as conn:
        patient = conn.execute(select(t.documents.c.patient_id).limit(1)).scalar_one()
    patient_slot = _slot(qp.DE_PATIENT_ID, f"'{patient}'")
    message = query_message(
        v.SQ_FIND_DOCUMENTS,
        v.RETURN_OBJECT_REF,
        patient_slot
        + _slot(qp.DE_STATUS, f"('{v.STATUS_APPROVED}')")
        + _slot(qp.DE_AUTHOR_PERSON, "'%Hansen%'")
        + _slot(qp.DE_EVENT_CODE, "('T-D4909^^2.16.578.1.12.4.1.1.7010')"),
    )
    text = "\n".join(plans(engine, message))
    assert "ix_document_codes_doc_kind" in text, text


def test_requests_are_drawn_from_the_whole_registry(engine: Engine) -> None:
    """Every patient of the registry can be asked about, not the first few: a draw as large as the
    population names each patient once, and two draws differ."""
    from sqlalchemy import func, select

    from xds.registry import schema as t

    fill(engine, 2000)
    with engine.connect() as conn:
        population = conn.execute(select(func.count(t.documents.c.patient_id.distinct()))).scalar_one()
    (find, *_) = workloads(engine, population, seed=1)
    assert len(set(find.messages)) == population  # each patient once
    (other, *_) = workloads(engine, 20, seed=2)
    (again, *_) = workloads(engine, 20, seed=3)
    assert other.messages != again.messages


def test_resident_fraction_reads_the_page_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from xds.bench.query import resident_fraction

    path = tmp_path / "f"
    path.write_bytes(b"x" * 100_000)
    path.read_bytes()
    share = resident_fraction(path)
    assert share is not None and 0.0 <= share <= 1.0
