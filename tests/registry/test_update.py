"""ITI-57 Update Document Set over real HTTP (ITI TF-2b §3.57.4.1.3): new versions of DocumentEntries
and Folders, status updates, new associations, every error the profile assigns, and two registries
on one database racing to update one entry. Every answer is checked against the ebRS schemas.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

from lifecycle import new_version, objects, q, query, status_update, submit, update_set, version
from support import RunningServer, make_config

from xds import samples
from xds.metadata import vocabulary as v
from xds.metadata.model import Association, DocumentEntry, LocalizedString, RegistryPackage, Slot, Submission
from xds.registry.register import assign_uuids

UPDATE = v.ACTION_UPDATE_DOCUMENT_SET
A, D = v.STATUS_APPROVED, v.STATUS_DEPRECATED


def registered(
    url: str, standards: Path, *, documents: int = 1, folder: bool = False, patient: str | None = None
):  # type: ignore[no-untyped-def]
    """A sample registered with ITI-42, its objects given their entryUUIDs beforehand."""
    sample = samples.submission(patient, documents=documents, with_folder=folder, rng=random.Random())
    assign_uuids(sample.submission)
    status, errors = submit(f"{url}/registry", v.ACTION_REGISTER, sample.submission, standards)
    assert status == v.RESPONSE_SUCCESS, errors
    return sample


def update(url: str, standards: Path, *objs) -> tuple[str, list]:  # type: ignore[no-untyped-def]
    return submit(f"{url}/registry", UPDATE, Submission(objects=list(objs)), standards)


def get_documents(url: str, standards: Path, name: str, value: str, level: int = 1):  # type: ignore[no-untyped-def]
    answer = query(
        f"{url}/registry",
        v.SQ_GET_DOCUMENTS,
        {name: [q(value)], "$MetadataLevel": [str(level)]},
        standards,
    )
    return objects(answer, "ExtrinsicObject")


def retitled(doc: DocumentEntry, previous: str, title: str, patient: str):  # type: ignore[no-untyped-def]
    ss = update_set(patient)
    new, member = new_version(doc, previous, ss)
    new.lid = doc.id
    new.name = [LocalizedString(title)]
    return ss, new, member


def test_a_new_document_version_deprecates_the_previous_one(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards)
    doc = sample.documents[0]
    ss, new, member = retitled(doc, "1", "Korrigert prøvesvar", sample.patient)
    status, errors = update(server.url, standards, ss, new, member)
    assert status == v.RESPONSE_SUCCESS, errors

    both = get_documents(server.url, standards, "$XDSDocumentEntryUniqueId", doc.unique_id or "", level=2)
    assert len(both) == 2
    old = both[doc.id]
    (new_id,) = set(both) - {doc.id}
    fresh = both[new_id]
    assert (version(old), old.get("status"), old.get("lid")) == ("1", D, doc.id)
    assert (version(fresh), fresh.get("status"), fresh.get("lid")) == ("2", A, doc.id)
    # $MetadataLevel 1: the newest version only; by logicalID: the history; by entryUUID: that one
    assert set(get_documents(server.url, standards, "$XDSDocumentEntryUniqueId", doc.unique_id or "")) == {
        new_id
    }
    assert set(get_documents(server.url, standards, "$XDSDocumentEntryLogicalID", doc.id)) == {doc.id, new_id}
    assert set(get_documents(server.url, standards, "$XDSDocumentEntryEntryUUID", doc.id)) == {doc.id}
    found = query(
        f"{server.url}/registry",
        v.SQ_FIND_DOCUMENTS,
        {"$XDSDocumentEntryPatientId": [f"'{sample.patient}'"], "$XDSDocumentEntryStatus": [q(A, D)]},
        standards,
    )
    assert set(objects(found, "ExtrinsicObject")) == {new_id}
    # ITI-51 likewise (ITI TF-2 §3.51.4.1.2.3): the newest version, every one at $MetadataLevel 2
    for level, expected in (("1", {new_id}), ("2", {doc.id, new_id})):
        body = query(
            f"{server.url}/registry",
            v.SQ_FIND_DOCUMENTS_MPQ,
            {
                "$XDSDocumentEntryPatientId": [q(sample.patient)],
                "$XDSDocumentEntryStatus": [q(A, D)],
                "$MetadataLevel": [level],
            },
            standards,
            action=v.ACTION_MULTI_PATIENT_QUERY,
        )
        assert set(objects(body, "ExtrinsicObject")) == expected

    # version 2 is the newest now: PreviousVersion 1 again is refused, 2 is taken
    again = retitled(doc, "1", "Tredje", sample.patient)
    status, errors = update(server.url, standards, *again)
    assert [e.code for e in errors] == [v.XDSMetadataVersionError]
    third = retitled(doc, "2", "Tredje", sample.patient)
    status, errors = update(server.url, standards, *third)
    assert status == v.RESPONSE_SUCCESS, errors
    history = get_documents(server.url, standards, "$XDSDocumentEntryLogicalID", doc.id)
    assert sorted(version(el) for el in history.values()) == ["1", "2", "3"]


def test_update_errors(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards)
    doc, pid = sample.documents[0], sample.patient

    def refused(code: str, *objs) -> None:  # type: ignore[no-untyped-def]
        status, errors = update(server.url, standards, *objs)
        assert status == v.RESPONSE_FAILURE
        assert code in [e.code for e in errors], errors

    ss, new, member = retitled(doc, "1", "x", pid)
    new.lid = "urn:uuid:6f1c0e34-8d0b-4b8e-9f57-0d6c8b0e8d11"  # no such entry
    refused(v.XDSMetadataVersionError, ss, new, member)

    ss, new, member = retitled(doc, "1", "x", pid)
    member.slots = [s for s in member.slots if s.name != "PreviousVersion"]
    refused(v.XDSMetadataUpdateOperationError, ss, new, member)  # a first version: ITI-42's

    ss, new, member = retitled(doc, "1", "x", pid)
    member.set_slot("AssociationPropagation", ["maybe"])
    refused(v.XDSMetadataUpdateOperationError, ss, new, member)

    ss, new, member = retitled(doc, "1", "x", pid)
    new.set_external_id(v.DE_UNIQUE_ID, samples.new_oid())
    refused(v.XDSMetadataIdentifierError, ss, new, member)

    ss, new, member = retitled(doc, "1", "x", pid)
    twin, twin_member = new_version(new, "1", ss)
    twin.id, twin_member.id, twin_member.target_object = "Twin", "ss-twin", "Twin"
    refused(v.XDSMetadataUpdateOperationError, ss, new, member, twin, twin_member)

    ss = update_set(pid)
    refused(v.XDSMetadataUpdateError, ss, status_update(ss, doc.id, D, A))  # it is Approved
    ss = update_set(pid)
    set_id = sample.submission.submission_sets[0].id
    refused(v.XDSMetadataUpdateOperationError, ss, status_update(ss, set_id, A, D))
    # nothing of the refused updates was stored
    assert set(get_documents(server.url, standards, "$XDSDocumentEntryLogicalID", doc.id)) == {doc.id}


def test_status_updates_of_documents_and_associations(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards, documents=2)
    first, second = sample.documents
    pid = sample.patient
    ss = update_set(pid)
    status, errors = update(server.url, standards, ss, status_update(ss, first.id, A, D))
    assert status == v.RESPONSE_SUCCESS, errors
    assert (
        get_documents(server.url, standards, "$XDSDocumentEntryEntryUUID", first.id)[first.id].get("status")
        == D
    )
    ss = update_set(pid)
    status, errors = update(server.url, standards, ss, status_update(ss, first.id, D, A))
    assert status == v.RESPONSE_SUCCESS, errors
    assert (
        get_documents(server.url, standards, "$XDSDocumentEntryEntryUUID", first.id)[first.id].get("status")
        == A
    )

    # a new APND between the two stored entries, then its status deprecated
    ss = update_set(pid)
    apnd = Association(id="apnd", association_type=v.APND, source_object=second.id, target_object=first.id)
    link = Association(id="ss-apnd", association_type=v.HAS_MEMBER, source_object=ss.id, target_object="apnd")
    assign_uuids(sub := Submission(objects=[ss, apnd, link]))
    status, errors = submit(f"{server.url}/registry", UPDATE, sub, standards)
    assert status == v.RESPONSE_SUCCESS, errors
    ss = update_set(pid)
    status, errors = update(server.url, standards, ss, status_update(ss, apnd.id, A, D))
    assert status == v.RESPONSE_SUCCESS, errors
    level2 = query(
        f"{server.url}/registry",
        v.SQ_GET_ASSOCIATIONS,
        {"$uuid": [q(first.id)], "$MetadataLevel": ["2"]},
        standards,
    )
    assert objects(level2, "Association")[apnd.id].get("status") == D
    level1 = query(f"{server.url}/registry", v.SQ_GET_ASSOCIATIONS, {"$uuid": [q(first.id)]}, standards)
    assert apnd.id not in objects(level1, "Association")

    # only the newest version's status changes
    ss, new, member = retitled(first, "1", "ny", pid)
    assert update(server.url, standards, ss, new, member)[0] == v.RESPONSE_SUCCESS
    ss = update_set(pid)
    status, errors = update(server.url, standards, ss, status_update(ss, first.id, D, A))
    assert [e.code for e in errors] == [v.XDSMetadataUpdateError]


def test_offline_documents_are_found_where_asked(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards)
    doc = sample.documents[0]
    ss, new, member = retitled(doc, "1", "arkivert", sample.patient)
    new.set_slot("documentAvailability", [v.DOCUMENT_AVAILABILITY_OFFLINE])
    assert update(server.url, standards, ss, new, member)[0] == v.RESPONSE_SUCCESS

    def find(*availability: str) -> set[str]:
        slots = {"$XDSDocumentEntryPatientId": [f"'{sample.patient}'"], "$XDSDocumentEntryStatus": [q(A)]}
        if availability:
            slots["$XDSDocumentEntryDocumentAvailability"] = [q(*availability)]
        answer = query(f"{server.url}/registry", v.SQ_FIND_DOCUMENTS, slots, standards)
        return set(objects(answer, "ExtrinsicObject"))

    offline = find(v.DOCUMENT_AVAILABILITY_OFFLINE)
    assert len(offline) == 1 and doc.id not in offline
    assert find(v.DOCUMENT_AVAILABILITY_ONLINE) == set()
    assert find() == offline


def folder_version(folder: RegistryPackage, patient: str, propagate: bool | None):  # type: ignore[no-untyped-def]
    ss = update_set(patient)
    new, member = new_version(folder, "1", ss, propagate=propagate)
    new.lid = folder.id
    new.slots = [s for s in new.slots if s.name != "lastUpdateTime"]
    return ss, new, member


def test_folder_versions_with_and_without_propagation(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    for propagate, members in ((True, 2), (False, 0)):
        sample = registered(server.url, standards, documents=2, folder=True)
        folder = sample.submission.folders[0]
        status, errors = update(server.url, standards, *folder_version(folder, sample.patient, propagate))
        assert status == v.RESPONSE_SUCCESS, errors
        level1 = query(
            f"{server.url}/registry",
            v.SQ_GET_FOLDER_AND_CONTENTS,
            {"$XDSFolderUniqueId": [f"'{folder.unique_id}'"]},
            standards,
        )
        (new_id,) = objects(level1, "RegistryPackage")
        assert new_id != folder.id and version(objects(level1, "RegistryPackage")[new_id]) == "2"
        assert len(objects(level1, "ExtrinsicObject")) == members
        level2 = query(
            f"{server.url}/registry",
            v.SQ_GET_FOLDER_AND_CONTENTS,
            {"$XDSFolderUniqueId": [f"'{folder.unique_id}'"], "$MetadataLevel": ["2"]},
            standards,
        )
        packages = objects(level2, "RegistryPackage")
        assert packages[folder.id].get("status") == D and len(packages) == 2


def test_patient_id_changes(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    other = samples.patient_cx(samples.person_number(random.Random(99)))
    lone = registered(server.url, standards)
    doc = lone.documents[0]
    ss, new, member = retitled(doc, "1", "rett pasient", other)
    new.set_external_id(v.DE_PATIENT_ID, other)
    status, errors = update(server.url, standards, ss, new, member)
    assert status == v.RESPONSE_SUCCESS, errors
    # an entry in a folder of its former patient cannot move
    filed = registered(server.url, standards, folder=True)
    doc = filed.documents[0]
    ss, new, member = retitled(doc, "1", "feil", other)
    new.set_external_id(v.DE_PATIENT_ID, other)
    status, errors = update(server.url, standards, ss, new, member)
    assert [e.code for e in errors] == [v.XDSPatientIDReconciliationError]
    # nor may an association join two patients' entries
    ss = update_set(filed.patient)
    apnd = Association(
        id="apnd", association_type=v.APND, source_object=doc.id, target_object=lone.documents[0].id
    )
    link = Association(id="ss-apnd", association_type=v.HAS_MEMBER, source_object=ss.id, target_object="apnd")
    status, errors = update(server.url, standards, ss, apnd, link)
    assert [e.code for e in errors] == [v.XDSPatientIDReconciliationError]


def test_concurrent_updates_of_one_entry_one_wins(tmp_path: Path, database_url: str, standards: Path) -> None:
    """Two registries (two engines, two event loops) on one database, eight updates of one entry
    sent at once: exactly one becomes version 2, every other is XDSMetadataVersionError."""
    with (
        RunningServer(make_config(tmp_path / "a", database_url)) as first,
        RunningServer(make_config(tmp_path / "b", database_url, mllp_port=0)) as second,
    ):
        sample = registered(first.url, standards)
        doc = sample.documents[0]
        racers = 8
        start = threading.Barrier(racers)
        outcomes: list[tuple[str, list]] = [("", [])] * racers

        def race(i: int) -> None:
            ss, new, member = retitled(doc, "1", f"utgave {i}", sample.patient)
            start.wait()
            outcomes[i] = update((first, second)[i % 2].url, standards, ss, new, member)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        winners = [o for o in outcomes if o[0] == v.RESPONSE_SUCCESS]
        assert len(winners) == 1, outcomes
        for status, errors in outcomes:
            if status != v.RESPONSE_SUCCESS:
                assert [e.code for e in errors] == [v.XDSMetadataVersionError], errors
        history = get_documents(first.url, standards, "$XDSDocumentEntryLogicalID", doc.id)
        assert sorted(version(el) for el in history.values()) == ["1", "2"]
        assert sorted(el.get("status") for el in history.values()) == [A, D]


def test_slots_of_status_updates_are_checked(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards)
    ss = update_set(sample.patient)
    change = status_update(
        ss, sample.documents[0].id, A, "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"
    )
    status, errors = update(server.url, standards, ss, change)
    assert [e.code for e in errors] == [v.XDSMetadataUpdateOperationError]
    change.slots = [Slot("OriginalStatus", [A])]
    status, errors = update(server.url, standards, ss, change)
    assert [e.code for e in errors] == [v.XDSMetadataUpdateOperationError]


def test_a_deprecated_entry_gets_no_new_version(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    """ITI-57 versions Approved entries; a Deprecated one only ITI-92 may (NIST 12319)."""
    sample = registered(server.url, standards)
    doc = sample.documents[0]
    ss = update_set(sample.patient)
    assert update(server.url, standards, ss, status_update(ss, doc.id, A, D))[0] == v.RESPONSE_SUCCESS
    status, errors = update(server.url, standards, *retitled(doc, "1", "ny", sample.patient))
    assert [e.code for e in errors] == [v.XDSMetadataUpdateError]


def test_a_status_update_names_entries_of_its_submission_sets_patient(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    """A SubmissionSet of one patient may not change the status of another patient's entries, folders
    or the associations between them (XDSPatientIDReconciliationError, ITI TF-2b §3.57.4.1.3.5);
    nothing changes."""
    mine = registered(server.url, standards)
    theirs = registered(server.url, standards, folder=True)
    member_of_theirs = next(
        a.id for a in theirs.submission.associations if a.target_object == theirs.documents[0].id
    )
    for target in (theirs.documents[0].id, theirs.submission.folders[0].id, member_of_theirs):
        ss = update_set(mine.patient)
        status, errors = update(server.url, standards, ss, status_update(ss, target, A, D))
        assert status == v.RESPONSE_FAILURE
        assert [e.code for e in errors] == [v.XDSPatientIDReconciliationError], errors
    doc = theirs.documents[0]
    assert (
        get_documents(server.url, standards, "$XDSDocumentEntryEntryUUID", doc.id)[doc.id].get("status") == A
    )
    # the patient's own SubmissionSet may
    ss = update_set(theirs.patient)
    status, errors = update(server.url, standards, ss, status_update(ss, doc.id, A, D))
    assert status == v.RESPONSE_SUCCESS, errors
