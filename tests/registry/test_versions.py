"""Versioned metadata (ITI TF-3 §4.1.x, ITI TF-2 §3.18.4.1.2.3.5.1): every stored object carries its
lid and ``rim:VersionInfo``; a registry made by the previous schema is brought forward at version 1.
"""

from __future__ import annotations

import random
from pathlib import Path

import sqlalchemy as sa
from lifecycle import objects, q, query, submit, version
from sqlalchemy import insert, select
from support import RunningServer, make_config, new_database

from xds import samples
from xds.database import migrate, open_engine
from xds.metadata import vocabulary as v
from xds.registry import rows
from xds.registry import schema as t
from xds.registry.register import assign_uuids


def test_every_registered_object_is_version_1_of_itself(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = samples.submission(documents=2, with_folder=True, rng=random.Random(7))
    for doc in sample.documents:  # a lid and version sent on ITI-42 do not make a version
        doc.lid, doc.version_name = "urn:uuid:00000000-0000-4000-8000-000000000001", "7"
    status, errors = submit(f"{server.url}/registry", v.ACTION_REGISTER, sample.submission, standards)
    assert status == v.RESPONSE_SUCCESS, errors
    answer = query(
        f"{server.url}/registry",
        v.SQ_GET_ALL,
        {
            "$patientId": [f"'{sample.patient}'"],
            "$XDSDocumentEntryStatus": [q(v.STATUS_APPROVED)],
            "$XDSSubmissionSetStatus": [q(v.STATUS_APPROVED)],
            "$XDSFolderStatus": [q(v.STATUS_APPROVED)],
        },
        standards,
    )
    found = {**objects(answer, "ExtrinsicObject"), **objects(answer, "RegistryPackage")}
    found.update(objects(answer, "Association"))
    assert len(found) == 2 + 2 + 2 + 2 + 2 + 1  # docs, SS + folder, memberships
    for oid, el in found.items():
        assert version(el) == "1", oid
        assert el.get("lid") == oid


def _old_schema_rows(engine, rng: random.Random):  # type: ignore[no-untyped-def]
    """One submission (two documents in a folder) stored as revision 0003 stored it: no version
    columns, fragments without rim:VersionInfo."""
    sample = samples.submission(documents=2, with_folder=True, rng=rng)
    sub = sample.submission
    assign_uuids(sub)
    for obj in sub.objects:
        obj.status, obj.lid = v.STATUS_APPROVED, obj.id
    new_columns = {"version", "latest", "availability"}

    def old(table: str, row: dict[str, object]) -> None:  # the row, less what revision 0004 added
        kept = {k: x for k, x in row.items() if k not in new_columns}
        conn.execute(insert(sa.table(table, *(sa.column(k) for k in kept))), kept)

    with engine.begin() as conn:
        for doc in sub.documents:
            old("documents", rows.document_row(doc))
        for pkg in sub.packages:
            if pkg.is_submission_set:
                conn.execute(insert(t.submission_sets), rows.submission_set_row(pkg))
            else:
                old("folders", rows.folder_row(pkg))
        conn.execute(insert(t.associations), [rows.association_row(a) for a in sub.associations])
        kinds = [{"uuid": d.id, "kind": "document"} for d in sub.documents]
        kinds += [
            {"uuid": p.id, "kind": "submissionset" if p.is_submission_set else "folder"} for p in sub.packages
        ]
        kinds += [{"uuid": a.id, "kind": "association"} for a in sub.associations]
        conn.execute(insert(t.registry_objects), kinds)
    return sample, sub


def test_a_registry_of_the_previous_schema_is_brought_forward(tmp_path: Path, standards: Path) -> None:
    with new_database(tmp_path) as url:
        engine = open_engine(url)
        migrate(engine, "0003")
        sample, sub = _old_schema_rows(engine, random.Random(11))
        with engine.connect() as conn:
            assert b"VersionInfo" not in conn.execute(select(t.associations.c.xml)).scalars().first()
        migrate(engine)  # 0004: every object at version 1
        with engine.connect() as conn:
            assert set(conn.execute(select(t.documents.c.version, t.documents.c.latest)).all()) == {(1, 1)}
            assert conn.execute(select(t.folders.c.version)).scalars().all() == [1]
        engine.dispose()
        with RunningServer(make_config(tmp_path / "data", url)) as server:
            registry = f"{server.url}/registry"
            answer = query(
                registry,
                v.SQ_GET_ALL,
                {
                    "$patientId": [f"'{sample.patient}'"],
                    "$XDSDocumentEntryStatus": [q(v.STATUS_APPROVED)],
                    "$XDSSubmissionSetStatus": [q(v.STATUS_APPROVED)],
                    "$XDSFolderStatus": [q(v.STATUS_APPROVED)],
                },
                standards,
            )
            found = {**objects(answer, "ExtrinsicObject"), **objects(answer, "RegistryPackage")}
            found.update(objects(answer, "Association"))
            assert set(found) == {o.id for o in sub.objects}
            assert {version(el) for el in found.values()} == {"1"}
            # the folder's uniqueId is still its own: another folder may not take it
            again = samples.submission(sample.patient, with_folder=True, rng=random.Random(12))
            again.submission.folders[0].set_external_id(v.FOLDER_UNIQUE_ID, sub.folders[0].unique_id or "")
            status, errors = submit(registry, v.ACTION_REGISTER, again.submission, standards)
            assert status == v.RESPONSE_FAILURE
            assert [e.code for e in errors] == [v.XDSDuplicateUniqueIdInRegistry]
            # and the registry goes on registering
            fresh = samples.submission(sample.patient, with_folder=True, rng=random.Random(13))
            status, errors = submit(registry, v.ACTION_REGISTER, fresh.submission, standards)
            assert status == v.RESPONSE_SUCCESS, errors
