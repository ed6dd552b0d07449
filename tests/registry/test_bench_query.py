"""``xds bench query``'s pieces: the workloads it asks and the query plans it shows (issue: plans use indexes)."""

from __future__ import annotations

from sqlalchemy import Engine

from xds.bench_query import fill, plans, workloads


def test_plans_show_the_statements_a_find_documents_runs_and_they_use_the_index(engine: Engine) -> None:
    assert fill(engine, 2000) >= 2000
    loads = workloads(engine)
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
