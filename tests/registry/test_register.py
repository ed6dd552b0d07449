"""ITI-42 registration against a real database (SQLite file, or PostgreSQL in CI)."""

from __future__ import annotations

import random

import pytest
from lxml import etree
from sqlalchemy import Engine, func, select

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsException
from xds.metadata.model import Submission
from xds.profiles import get_profile
from xds.registry import schema as t
from xds.registry.patients import PatientDirectory
from xds.registry.register import Registrar


@pytest.fixture
def registrar(engine: Engine) -> Registrar:
    return Registrar(engine, PatientDirectory(engine), get_profile("norway"))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(7)


def codes_of(exc: pytest.ExceptionInfo[XdsException]) -> list[str]:
    return [e.code for e in exc.value.errors]


def count(engine: Engine, table: t.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def all_counts(engine: Engine) -> dict[str, int]:
    return {name: count(engine, table) for name, table in t.metadata.tables.items() if name != "patients"}


def stored_document(engine: Engine, unique_id: str) -> list[tuple[str, str, bytes]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.documents.c.uuid, t.documents.c.status, t.documents.c.xml).where(
                t.documents.c.unique_id == unique_id
            )
        ).all()
    return [(r.uuid, r.status, r.xml) for r in rows]


def uuid_of(engine: Engine, unique_id: str) -> str:
    return stored_document(engine, unique_id)[0][0]


def rplc(patient: str, kind: str, target_uuid: str, rng: random.Random) -> samples.Sample:
    sample = samples.submission(patient, rng=rng)
    sample.submission.objects.append(samples.relationship("rel", kind, "Document01", target_uuid))
    return sample


def test_register_one_document_stores_every_object(
    registrar: Registrar, engine: Engine, rng, standards
) -> None:
    sample = samples.submission(rng=rng, with_folder=True)
    registrar.register(sample.submission)
    counts = all_counts(engine)
    assert counts["documents"] == 1 and counts["submission_sets"] == 1 and counts["folders"] == 1
    assert counts["associations"] == 4
    uid = sample.documents[0].unique_id
    [(uuid, status, xml)] = stored_document(engine, uid)
    assert uuid.startswith("urn:uuid:") and status == v.STATUS_APPROVED
    # the stored fragment is valid ebRIM 3.0 and carries the status and the assigned ids
    schema = etree.XMLSchema(etree.parse(str(standards / "iti/schema/ebRS/rim.xsd")))
    el = safexml.parse(xml)
    schema.assertValid(el)
    assert el.get("status") == v.STATUS_APPROVED and el.get("id") == uuid
    for child in el.iter(f"{{{v.NS_RIM}}}Classification", f"{{{v.NS_RIM}}}ExternalIdentifier"):
        assert child.get("id").startswith("urn:uuid:")
    # the folder got a lastUpdateTime from the registry
    with engine.connect() as conn:
        assert conn.execute(select(t.folders.c.last_update_time)).scalar_one()


def test_round_trip_of_stored_fragment_keeps_extra_slots(registrar: Registrar, engine: Engine, rng) -> None:
    sample = samples.submission(rng=rng)
    sample.documents[0].set_slot("urn:no:nhn:extra", ["one", "two"])
    registrar.register(sample.submission)
    [(_, _, xml)] = stored_document(engine, sample.documents[0].unique_id)
    doc = ebrim.parse_object(safexml.parse(xml))
    assert doc.slot_values("urn:no:nhn:extra") == ["one", "two"]


def test_unknown_patient_is_refused(registrar: Registrar, engine: Engine, rng) -> None:
    sample = samples.submission("ABC123^^^&1.2.3.4.5&ISO", rng=rng)
    with pytest.raises(XdsException) as exc:
        registrar.register(sample.submission)
    assert codes_of(exc) == [v.XDSUnknownPatientId]
    assert count(engine, t.documents) == 0


def test_patient_known_from_feed_is_accepted(registrar: Registrar, engine: Engine, rng) -> None:
    registrar.patients.register("ABC123^^^&1.2.3.4.5&ISO")
    registrar.register(samples.submission("ABC123^^^&1.2.3.4.5&ISO", rng=rng).submission)
    assert count(engine, t.documents) == 1


def test_malformed_national_id_is_an_error_not_unknown(registrar: Registrar, rng) -> None:
    sample = samples.submission("13116900217^^^&2.16.578.1.12.4.1.4.1&ISO", rng=rng)
    with pytest.raises(XdsException) as exc:
        registrar.register(sample.submission)
    assert v.XDSUnknownPatientId not in codes_of(exc)
    assert v.XDSRegistryMetadataError in codes_of(exc)


def test_merged_patient_resolves_to_survivor(registrar: Registrar, engine: Engine, rng) -> None:
    old, new = "OLD1^^^&1.2.3.4.5&ISO", "NEW1^^^&1.2.3.4.5&ISO"
    registrar.patients.register(old)
    registrar.patients.register(new)
    registrar.patients.merge(old, new)
    sample = samples.submission(old, rng=rng)
    registrar.register(sample.submission)
    with engine.connect() as conn:
        assert conn.execute(select(t.documents.c.patient_id)).scalar_one() == new


def test_duplicate_submission_set_unique_id_stores_nothing(registrar: Registrar, engine: Engine, rng) -> None:
    first = samples.submission(rng=rng)
    registrar.register(first.submission)
    before = all_counts(engine)
    second = samples.submission(first.patient, rng=rng)
    ss_uid = first.submission.submission_sets[0].unique_id
    second.submission.submission_sets[0].set_external_id(v.SS_UNIQUE_ID, ss_uid)
    with pytest.raises(XdsException) as exc:
        registrar.register(second.submission)
    assert codes_of(exc) == [v.XDSDuplicateUniqueIdInRegistry]
    assert all_counts(engine) == before


def test_resubmission_same_hash_accepted_different_hash_refused(
    registrar: Registrar, engine: Engine, rng
) -> None:
    first = samples.submission(rng=rng)
    registrar.register(first.submission)
    uid = first.documents[0].unique_id
    again = samples.submission(first.patient, rng=rng)
    doc = again.documents[0]
    doc.set_external_id(v.DE_UNIQUE_ID, uid)
    doc.set_slot("hash", [first.documents[0].hash.upper()])  # hash comparison ignores case
    registrar.register(again.submission)
    assert len(stored_document(engine, uid)) == 2
    before = all_counts(engine)
    third = samples.submission(first.patient, rng=rng)
    third.documents[0].set_external_id(v.DE_UNIQUE_ID, uid)
    third.documents[0].set_slot("hash", ["0" * 40])
    with pytest.raises(XdsException) as exc:
        registrar.register(third.submission)
    assert codes_of(exc) == [v.XDSNonIdenticalHash]
    assert all_counts(engine) == before


def test_replace_deprecates_original_and_cascades(registrar: Registrar, engine: Engine, rng) -> None:
    original = samples.submission(rng=rng)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    addendum = rplc(original.patient, v.APND, target, rng)
    registrar.register(addendum.submission)
    replacement = rplc(original.patient, v.RPLC, target, rng)
    registrar.register(replacement.submission)
    [(_, status, xml)] = stored_document(engine, original.documents[0].unique_id)
    assert status == v.STATUS_DEPRECATED
    assert safexml.parse(xml).get("status") == v.STATUS_DEPRECATED
    # the addendum of the replaced document is deprecated with it (ITI TF-3 §4.2.2.2)
    [(_, apnd_status, _)] = stored_document(engine, addendum.documents[0].unique_id)
    assert apnd_status == v.STATUS_DEPRECATED
    [(_, new_status, _)] = stored_document(engine, replacement.documents[0].unique_id)
    assert new_status == v.STATUS_APPROVED


def test_replacing_a_deprecated_document_is_refused(registrar: Registrar, engine: Engine, rng) -> None:
    original = samples.submission(rng=rng)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    registrar.register(rplc(original.patient, v.RPLC, target, rng).submission)
    before = all_counts(engine)
    with pytest.raises(XdsException) as exc:
        registrar.register(rplc(original.patient, v.RPLC, target, rng).submission)
    assert codes_of(exc) == [v.XDSRegistryDeprecatedDocumentError]
    assert all_counts(engine) == before


@pytest.mark.parametrize("kind", [v.RPLC, v.APND, v.XFRM, v.XFRM_RPLC, v.SIGNS])
def test_relationship_to_another_patients_document_is_refused(
    registrar: Registrar, engine: Engine, rng, kind
) -> None:
    original = samples.submission(rng=rng)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    other = samples.submission(rng=rng)  # a different synthetic patient
    other.submission.objects.append(samples.relationship("rel", kind, "Document01", target))
    with pytest.raises(XdsException) as exc:
        registrar.register(other.submission)
    assert v.XDSPatientIdDoesNotMatch in codes_of(exc)


def test_relationship_to_missing_document_is_refused(registrar: Registrar, rng) -> None:
    sample = rplc(None, v.RPLC, "urn:uuid:00000000-0000-4000-8000-000000000000", rng)
    with pytest.raises(XdsException) as exc:
        registrar.register(sample.submission)
    assert codes_of(exc) and all(c == v.XDSRegistryMetadataError for c in codes_of(exc))


def test_replacement_inherits_folder_membership(registrar: Registrar, engine: Engine, rng) -> None:
    original = samples.submission(rng=rng, with_folder=True)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    with engine.connect() as conn:
        folder_uuid, first_update = conn.execute(select(t.folders.c.uuid, t.folders.c.last_update_time)).one()
    registrar.clock = lambda: "29991231235959"
    replacement = rplc(original.patient, v.RPLC, target, rng)
    registrar.register(replacement.submission)
    new_uuid = uuid_of(engine, replacement.documents[0].unique_id)
    with engine.connect() as conn:
        members = (
            conn.execute(
                select(t.associations.c.target).where(
                    t.associations.c.source == folder_uuid, t.associations.c.type == v.HAS_MEMBER
                )
            )
            .scalars()
            .all()
        )
        update_time = conn.execute(select(t.folders.c.last_update_time)).scalar_one()
    assert new_uuid in members and target in members
    assert update_time == "29991231235959" != first_update


def test_add_existing_document_to_existing_folder(registrar: Registrar, engine: Engine, rng) -> None:
    with_folder = samples.submission(rng=rng, with_folder=True)
    registrar.register(with_folder.submission)
    lone = samples.submission(with_folder.patient, rng=rng)
    registrar.register(lone.submission)
    with engine.connect() as conn:
        folder_uuid = conn.execute(select(t.folders.c.uuid)).scalar_one()
    doc_uuid = uuid_of(engine, lone.documents[0].unique_id)
    registrar.clock = lambda: "29990101000000"
    # a submission set that only links an existing document into an existing folder
    ss = samples.submission_set("SubmissionSet01", with_folder.patient, rng)
    objects = [
        ss,
        samples.has_member("member", folder_uuid, doc_uuid, status=None),
        samples.has_member("link", "SubmissionSet01", "member", status=None),
    ]
    registrar.register(Submission(objects=objects))
    with engine.connect() as conn:
        assert conn.execute(select(t.folders.c.last_update_time)).scalar_one() == "29990101000000"
        xml = conn.execute(select(t.folders.c.xml)).scalar_one()
    assert ebrim.parse_object(safexml.parse(xml)).slot_value("lastUpdateTime") == "29990101000000"

    # a second change within the same second still moves lastUpdateTime forward
    another = samples.submission(with_folder.patient, rng=rng)
    registrar.register(another.submission)
    second_doc = uuid_of(engine, another.documents[0].unique_id)
    ss2 = samples.submission_set("SubmissionSet01", with_folder.patient, rng)
    registrar.register(
        Submission(
            objects=[
                ss2,
                samples.has_member("member", folder_uuid, second_doc, status=None),
                samples.has_member("link", "SubmissionSet01", "member", status=None),
            ]
        )
    )
    with engine.connect() as conn:
        assert conn.execute(select(t.folders.c.last_update_time)).scalar_one() == "29990101000001"


def test_adding_to_another_patients_folder_is_refused(registrar: Registrar, engine: Engine, rng) -> None:
    with_folder = samples.submission(rng=rng, with_folder=True)
    registrar.register(with_folder.submission)
    with engine.connect() as conn:
        folder_uuid = conn.execute(select(t.folders.c.uuid)).scalar_one()
    other = samples.submission(rng=rng)
    other.submission.objects += [
        samples.has_member("member", folder_uuid, "Document01", status=None),
        samples.has_member("link", "SubmissionSet01", "member", status=None),
    ]
    with pytest.raises(XdsException) as exc:
        registrar.register(other.submission)
    assert v.XDSPatientIdDoesNotMatch in codes_of(exc)


def test_invalid_submission_reports_every_error_and_stores_nothing(
    registrar: Registrar, engine: Engine, rng
) -> None:
    sample = samples.submission(rng=rng, documents=2)
    d1, d2 = sample.documents
    d1.set_slot("creationTime", ["2005122"])  # not a DTM
    d2.set_slot("hash", ["xyz"])  # not a SHA-1
    d2.set_external_id(v.DE_UNIQUE_ID, d1.unique_id)  # duplicate uniqueId in message
    with pytest.raises(XdsException) as exc:
        registrar.register(sample.submission)
    codes = codes_of(exc)
    assert v.XDSRegistryDuplicateUniqueIdInMessage in codes
    assert codes.count(v.XDSRegistryMetadataError) >= 2
    assert all(count(engine, table) == 0 for name, table in t.metadata.tables.items() if name != "patients")


def test_work_within_the_registration_transaction_commits_or_rolls_back_with_it(
    registrar: Registrar, engine: Engine, rng
) -> None:
    """``within`` (a repository of this process recording its documents) shares the transaction."""
    seen: list[int] = []

    def count_inside(conn) -> None:  # type: ignore[no-untyped-def]
        # the submission's own rows are visible: same transaction
        seen.append(int(conn.execute(select(func.count()).select_from(t.documents)).scalar_one()))

    registrar.register(samples.submission(rng=rng).submission, within=count_inside)
    assert seen == [1] and count(engine, t.documents) == 1

    def refuse(conn) -> None:  # type: ignore[no-untyped-def]
        raise XdsException.of(v.XDSRepositoryError, "the repository could not record it")

    before = all_counts(engine)
    with pytest.raises(XdsException) as exc:
        registrar.register(samples.submission(rng=rng).submission, within=refuse)
    assert codes_of(exc) == [v.XDSRepositoryError]
    assert all_counts(engine) == before


def test_submissions_arriving_together_share_a_commit_and_are_judged_one_by_one(
    registrar: Registrar, engine: Engine, rng
) -> None:
    """The server's path (register_together): a refused submission in a batch leaves the others."""
    import asyncio

    good = [samples.submission(rng=rng) for _ in range(3)]
    clash = samples.submission(rng=rng)
    ss_uid = good[0].submission.submission_sets[0].unique_id or ""
    clash.submission.submission_sets[0].set_external_id(v.SS_UNIQUE_ID, ss_uid)
    bad_patient = samples.submission("123^^^&1.2.3.4.5&ISO", rng=rng)

    async def together() -> list[object]:
        subs = [good[0].submission, clash.submission, good[1].submission, bad_patient.submission]
        subs.append(good[2].submission)
        return await asyncio.gather(*(registrar.register_together(s) for s in subs), return_exceptions=True)

    ok0, clashed, ok1, unknown, ok2 = asyncio.run(together())
    assert (ok0, ok1, ok2) == (None, None, None)
    assert isinstance(clashed, XdsException)
    assert [e.code for e in clashed.errors] == [v.XDSDuplicateUniqueIdInRegistry]
    assert isinstance(unknown, XdsException)
    assert [e.code for e in unknown.errors] == [v.XDSUnknownPatientId]
    assert count(engine, t.submission_sets) == 3 and count(engine, t.documents) == 3


def test_rows_of_a_submission_link_children_to_their_parents_and_clash_as_integrity_errors(
    registrar: Registrar, engine: Engine, rng
) -> None:
    """Each document's codes and each set's authors carry their parent's seq (on PostgreSQL taken
    from the sequence inside one pipeline), and inserting the same rows again is refused by the
    database as SQLAlchemy's IntegrityError, which the registration's race handling catches."""
    from sqlalchemy.exc import IntegrityError

    from xds.database import write_transaction
    from xds.registry.register import _SubmissionRows

    for _ in range(3):
        registrar.register(samples.submission(rng=rng, with_folder=True).submission)
    with engine.connect() as conn:
        docs = dict(conn.execute(select(t.documents.c.seq, t.documents.c.uuid)).all())
        code_seqs = set(conn.execute(select(t.document_codes.c.doc_seq)).scalars())
        sets = set(conn.execute(select(t.submission_sets.c.seq)).scalars())
        author_seqs = set(conn.execute(select(t.submission_set_authors.c.ss_seq)).scalars())
        folders = set(conn.execute(select(t.folders.c.seq)).scalars())
        folder_code_seqs = set(conn.execute(select(t.folder_codes.c.folder_seq)).scalars())
    assert code_seqs == set(docs) and author_seqs == sets and folder_code_seqs == folders
    sample = samples.submission(rng=rng)
    registrar.register(sample.submission)
    before = all_counts(engine)
    again = _SubmissionRows.of(sample.submission)  # the same uuids and uniqueIds once more
    with pytest.raises(IntegrityError), write_transaction(engine) as conn:
        again.insert(conn, [])
    assert all_counts(engine) == before


def test_a_registration_rolled_back_and_run_again_writes_what_it_would_have_once(
    registrar: Registrar, engine: Engine, rng
) -> None:
    """GroupCommit runs a submission again in a new transaction after a batch was rolled back
    (a deadlock on PostgreSQL): what the first run learnt from the database (the replaced
    document, the folder membership it carries over) must not be counted twice."""
    from xds.database import write_transaction

    original = samples.submission(rng=rng, with_folder=True)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    replacement = rplc(original.patient, v.RPLC, target, rng)
    job = registrar.prepare(replacement.submission)
    before = all_counts(engine)
    with write_transaction(engine) as conn:
        job.apply(conn)
        conn.rollback()  # as a batch that met a deadlock is
    assert all_counts(engine) == before
    with write_transaction(engine) as conn:
        job.apply(conn)
    after = all_counts(engine)
    # the submission's own associations (HasMember, RPLC) plus one folder membership and its link
    assert after["associations"] - before["associations"] == len(replacement.submission.associations) + 2
    assert after["documents"] - before["documents"] == 1
    new_uuid = uuid_of(engine, replacement.documents[0].unique_id)
    with engine.connect() as conn:
        folder_uuid = conn.execute(select(t.folders.c.uuid)).scalar_one()
        a = t.associations.c
        members = conn.execute(select(a.target).where(a.source == folder_uuid, a.type == v.HAS_MEMBER))
        assert sorted(members.scalars()) == sorted([target, new_uuid])
        status = conn.execute(select(t.documents.c.status).where(t.documents.c.uuid == target)).scalar_one()
    assert status == v.STATUS_DEPRECATED


@pytest.mark.parametrize("submit_under", ["old", "new"])
def test_documents_filed_before_a_merge_can_be_replaced_under_either_identifier(
    registrar: Registrar, engine: Engine, rng, submit_under: str
) -> None:
    """After ADT^A40 the survivor owns what was filed under the merged-away identifier (ITI TF-2
    §3.8.4.2): replacing, appending to or filing into it is the same patient, not
    XDSPatientIdDoesNotMatch."""
    old, new = "OLD2^^^&1.2.3.4.5&ISO", "NEW2^^^&1.2.3.4.5&ISO"
    registrar.patients.register(old)
    registrar.patients.register(new)
    original = samples.submission(old, rng=rng, with_folder=True)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    registrar.patients.merge(old, new)
    patient = old if submit_under == "old" else new
    registrar.register(rplc(patient, v.RPLC, target, rng).submission)
    with engine.connect() as conn:
        status = conn.execute(select(t.documents.c.status).where(t.documents.c.uuid == target)).scalar_one()
    assert status == v.STATUS_DEPRECATED
    # a document of another patient is still refused
    other = "OTHER2^^^&1.2.3.4.5&ISO"
    registrar.patients.register(other)
    with engine.connect() as conn:
        approved = conn.execute(
            select(t.documents.c.uuid).where(t.documents.c.status == v.STATUS_APPROVED)
        ).scalar_one()
    with pytest.raises(XdsException) as exc:
        registrar.register(rplc(other, v.APND, approved, rng).submission)
    assert codes_of(exc) == [v.XDSPatientIdDoesNotMatch]


def test_a_national_id_is_filed_in_canonical_form(registrar: Registrar, engine: Engine, rng) -> None:
    """A valid fødselsnummer never fed is accepted (Norwegian profile) and, like one from the
    feed, filed as ID^^^&OID&ISO: a trailing empty component does not make another patient
    (ITI TF-3 §4.2.3.1.7 keeps only CX.1 and CX.4)."""
    canonical = samples.submission(rng=rng).patient
    for form in (canonical + "^", canonical + "^^", canonical):
        registrar.register(samples.submission(form, rng=rng).submission)
    with engine.connect() as conn:
        stored = set(conn.execute(select(t.documents.c.patient_id)).scalars())
        stored |= set(conn.execute(select(t.submission_sets.c.patient_id)).scalars())
    assert stored == {canonical}


def _rename_document(sub: Submission, new_id: str) -> None:
    doc = sub.documents[0]
    old = doc.id
    doc.id = new_id
    for nested in (*doc.classifications, *doc.external_ids):
        if getattr(nested, "classified_object", None) == old:
            nested.classified_object = new_id  # type: ignore[attr-defined]
        if getattr(nested, "registry_object", None) == old:
            nested.registry_object = new_id  # type: ignore[attr-defined]
    for a in sub.associations:
        if a.target_object == old:
            a.target_object = new_id


def test_entry_uuids_must_be_uuids_and_are_kept_in_lower_case(
    registrar: Registrar, engine: Engine, rng
) -> None:
    """An id given as urn:uuid: must be one (ITI TF-3 §4.1.12.3); UUIDs are case-insensitive on
    input (RFC 4122 §3), so an upper-case spelling of a stored entryUUID is that object, not a
    second one."""
    import uuid as uuidlib

    bad = samples.submission(rng=rng)
    _rename_document(bad.submission, "urn:uuid:not-a-uuid")
    with pytest.raises(XdsException) as exc:
        registrar.register(bad.submission)
    assert codes_of(exc) == [v.XDSRegistryMetadataError]
    assert count(engine, t.documents) == 0

    chosen = f"urn:uuid:{str(uuidlib.uuid4()).upper()}"
    first = samples.submission(rng=rng)
    _rename_document(first.submission, chosen)
    registrar.register(first.submission)
    assert uuid_of(engine, first.documents[0].unique_id) == chosen.lower()
    for spelling in (chosen.lower(), chosen):
        again = samples.submission(rng=rng)
        _rename_document(again.submission, spelling)
        with pytest.raises(XdsException) as exc:
            registrar.register(again.submission)
        assert codes_of(exc) == [v.XDSRegistryMetadataError]  # the entryUUID is already used


def test_one_document_replaced_twice_in_one_submission_is_refused(
    registrar: Registrar, engine: Engine, rng
) -> None:
    original = samples.submission(rng=rng)
    registrar.register(original.submission)
    target = uuid_of(engine, original.documents[0].unique_id)
    twice = samples.submission(original.patient, rng=rng, documents=2)
    for n, doc in enumerate(twice.submission.documents):
        twice.submission.objects.append(samples.relationship(f"rel{n}", v.RPLC, doc.id, target))
    before = all_counts(engine)
    with pytest.raises(XdsException) as exc:
        registrar.register(twice.submission)
    assert codes_of(exc) == [v.XDSRegistryMetadataError]
    assert all_counts(engine) == before
