"""Bulk loading of synthetic registrations through the storage layer (for ``xds bench load``).

Each patient gets one submission set holding their documents, built with ``xds.samples``
(Norwegian-profile ids and Volven codes), given UUIDs and Approved status as ITI-42 would, and
written with the same row builders as registration (``xds.registry.rows``) — but many submissions per
transaction and sequence numbers assigned here, so a million entries load in minutes. It skips
the per-submission checks of ITI-42 (the data are made valid), never the storage format.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select

from xds import samples
from xds.metadata import vocabulary as v
from xds.registry import rows
from xds.registry import schema as t
from xds.registry.register import assign_uuids


@dataclass
class LoadResult:
    documents: int
    submission_sets: int
    seconds: float
    busy_patients: list[str]  # patients with the most documents (for the query benchmark)


def patient_plan(documents: int, patients: int) -> Iterator[int]:
    """Documents per patient: every tenth patient has a busy record of 20, the rest share the remainder."""
    n_busy = len(range(0, patients, 10))
    busy_docs = min(20, documents // max(1, n_busy))
    rest_patients = patients - n_busy
    rest_docs = documents - n_busy * busy_docs
    base, extra = divmod(rest_docs, rest_patients) if rest_patients else (0, 0)
    j = 0
    for i in range(patients):
        if i % 10 == 0:
            yield busy_docs
        else:
            yield base + (1 if j < extra else 0)
            j += 1


def load(
    engine: Engine,
    documents: int,
    patients: int,
    *,
    seed: int = 1,
    batch_documents: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Register ``documents`` document entries over ``patients`` patients; returns what was made."""
    rng = random.Random(seed)
    start = time.perf_counter()
    with engine.connect() as conn:
        doc_seq = int(conn.execute(select(func.coalesce(func.max(t.documents.c.seq), 0))).scalar_one())
        ss_seq = int(conn.execute(select(func.coalesce(func.max(t.submission_sets.c.seq), 0))).scalar_one())
    buffers: dict[str, list[rows.Row]] = {name: [] for name in _TABLES}
    loaded = sets = 0
    busy: list[str] = []
    pending_docs = 0
    for count in patient_plan(documents, patients):
        if count <= 0:
            continue
        patient = samples.patient_cx(samples.person_number(rng))
        if count >= 20 and len(busy) < 100:
            busy.append(patient)
        sample = samples.submission(patient, documents=count, rng=rng)
        sub = sample.submission
        assign_uuids(sub)
        for obj in sub.objects:
            obj.status = v.STATUS_APPROVED
            obj.lid = obj.id
            obj.version_name = "1"
        ss = sub.submission_sets[0]
        ss_seq += 1
        sets += 1
        buffers["submission_sets"].append({"seq": ss_seq, **rows.submission_set_row(ss)})
        buffers["submission_set_authors"] += rows.submission_set_author_rows(ss, ss_seq)
        buffers["registry_objects"].append({"uuid": ss.id, "kind": "submissionset"})
        for doc in sub.documents:
            doc_seq += 1
            buffers["documents"].append({"seq": doc_seq, **rows.document_row(doc)})
            buffers["document_codes"] += rows.document_code_rows(doc, doc_seq)
            buffers["document_hashes"].append({"unique_id": doc.unique_id, "hash": (doc.hash or "").lower()})
            buffers["registry_objects"].append({"uuid": doc.id, "kind": "document"})
        for assoc in sub.associations:
            buffers["associations"].append(rows.association_row(assoc))
            buffers["registry_objects"].append({"uuid": assoc.id, "kind": "association"})
        loaded += count
        pending_docs += count
        if pending_docs >= batch_documents:
            _flush(engine, buffers)
            pending_docs = 0
            if progress:
                progress(loaded)
    _flush(engine, buffers)
    if progress:
        progress(loaded)
    return LoadResult(loaded, sets, time.perf_counter() - start, busy)


_TABLES = {
    "submission_sets": t.submission_sets,
    "submission_set_authors": t.submission_set_authors,
    "documents": t.documents,
    "document_codes": t.document_codes,
    "document_hashes": t.document_hashes,
    "associations": t.associations,
    "registry_objects": t.registry_objects,
}


def _flush(engine: Engine, buffers: dict[str, list[rows.Row]]) -> None:
    if not any(buffers.values()):
        return
    with engine.begin() as conn:
        for name, table in _TABLES.items():
            if buffers[name]:
                conn.execute(insert(table), buffers[name])
                buffers[name] = []
    if engine.dialect.name == "postgresql":
        # keep the sequences ahead of the explicitly numbered rows
        with engine.begin() as conn:
            for table in (t.documents, t.submission_sets):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'seq'), "
                    f"(SELECT COALESCE(MAX(seq), 1) FROM {table.name}))"
                )
