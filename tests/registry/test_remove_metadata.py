"""ITI-62 Remove Metadata over real HTTP (ITI TF-2b §3.62.4.1.3): all or nothing, each error, and
the repository's documents untouched."""

from __future__ import annotations

import random
from pathlib import Path

from lifecycle import objects, post, q, query, remove, submit

from xds import samples
from xds.metadata import vocabulary as v
from xds.registry.register import assign_uuids

A = v.STATUS_APPROVED


def registered(url: str, standards: Path, **kwargs):  # type: ignore[no-untyped-def]
    sample = samples.submission(rng=random.Random(), **kwargs)
    assign_uuids(sample.submission)
    status, errors = submit(f"{url}/registry", v.ACTION_REGISTER, sample.submission, standards)
    assert status == v.RESPONSE_SUCCESS, errors
    return sample


def everything(url: str, standards: Path, patient: str) -> set[str]:
    answer = query(
        f"{url}/registry",
        v.SQ_GET_ALL,
        {
            "$patientId": [f"'{patient}'"],
            "$XDSDocumentEntryStatus": [q(A, v.STATUS_DEPRECATED)],
            "$XDSSubmissionSetStatus": [q(A)],
            "$XDSFolderStatus": [q(A)],
            "$MetadataLevel": ["2"],
        },
        standards,
    )
    found: set[str] = set()
    for tag in ("ExtrinsicObject", "RegistryPackage", "Association"):
        found |= set(objects(answer, tag))
    return found


def test_remove_a_whole_submission(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards, documents=2, with_folder=True)
    keep = registered(server.url, standards, patient=sample.patient)
    ids = [o.id for o in sample.submission.objects]
    status, errors = remove(f"{server.url}/registry", ids, standards)
    assert status == v.RESPONSE_SUCCESS, errors
    assert everything(server.url, standards, sample.patient) == {o.id for o in keep.submission.objects}
    # a uniqueId no entry carries any more may be registered again
    again = samples.submission(sample.patient, rng=random.Random())
    again.documents[0].set_external_id(v.DE_UNIQUE_ID, sample.documents[0].unique_id or "")
    status, errors = submit(f"{server.url}/registry", v.ACTION_REGISTER, again.submission, standards)
    assert status == v.RESPONSE_SUCCESS, errors


def test_remove_errors_leave_everything_in_place(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards, documents=1, with_folder=True)
    registry = f"{server.url}/registry"
    before = everything(server.url, standards, sample.patient)
    ss = sample.submission.submission_sets[0]
    folder = sample.submission.folders[0]
    unknown = "urn:uuid:8b0d6c1e-2f7a-4c55-9a0e-3d9f1b2c4e5f"

    status, errors = remove(registry, [ss.id, unknown], standards)
    assert [e.code for e in errors] == [v.UnresolvedReferenceException]
    assert errors[0].location == unknown
    status, errors = remove(registry, [ss.id], standards)  # its HasMembers name it
    assert status == v.RESPONSE_FAILURE
    assert {e.code for e in errors} == {v.ReferencesExistException}
    # the folder and the set's membership of it, but the folder's own memberships stay: referenced
    member = next(a for a in sample.submission.associations if a.target_object == folder.id)
    status, errors = remove(registry, [folder.id, member.id], standards)
    assert {e.code for e in errors} == {v.ReferencesExistException}
    # a document's only SubmissionSet membership, without the document
    doc = sample.documents[0]
    doc_member = next(
        a for a in sample.submission.associations if a.source_object == ss.id and a.target_object == doc.id
    )
    status, errors = remove(registry, [doc_member.id], standards)
    assert v.XDSUnreferencedObjectException in {e.code for e in errors}
    assert everything(server.url, standards, sample.patient) == before


def test_remove_an_association_alone(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards, documents=2, with_folder=True)
    folder = sample.submission.folders[0]
    membership = next(a for a in sample.submission.associations if a.source_object == folder.id)
    carrier = next(a for a in sample.submission.associations if a.target_object == membership.id)
    status, errors = remove(f"{server.url}/registry", [membership.id, carrier.id], standards)
    assert status == v.RESPONSE_SUCCESS, errors
    left = everything(server.url, standards, sample.patient)
    assert membership.id not in left and carrier.id not in left
    # nothing else went with them: the set whose membership was removed stays
    assert left == {o.id for o in sample.submission.objects} - {membership.id, carrier.id}


def test_malformed_remove_requests(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    from lifecycle import schema

    from xds.metadata.registry_response import parse_registry_response

    for body in (
        f'<lcm:RemoveObjectsRequest xmlns:lcm="{v.NS_LCM}"/>',
        f'<lcm:SubmitObjectsRequest xmlns:lcm="{v.NS_LCM}"/>',
    ):
        answer = post(f"{server.url}/registry", v.ACTION_DELETE_DOCUMENT_SET, body.encode())
        schema(standards, "rs.xsd").assertValid(answer)
        status, errors = parse_registry_response(answer)
        assert status == v.RESPONSE_FAILURE and errors[0].code == v.XDSRegistryError


def test_the_repository_keeps_its_documents(server, standards: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ITI-62 removes metadata only; the bytes stay retrievable (ITI-86 removes those)."""
    from xds.client import RepositoryClient, describe_files

    source = tmp_path / "svar.txt"
    source.write_bytes(b"Hemoglobin 13.9 g/dL")
    sub, documents = describe_files([source], samples.patient_cx("13116900216"))
    with RepositoryClient(f"{server.url}/repository/default") as client:
        assert client.provide_and_register(sub, documents).ok
        answer = query(
            f"{server.url}/registry",
            v.SQ_FIND_DOCUMENTS,
            {
                "$XDSDocumentEntryPatientId": ["'13116900216^^^&2.16.578.1.12.4.1.4.1&ISO'"],
                "$XDSDocumentEntryStatus": [q(A)],
            },
            standards,
        )
        (entry,) = objects(answer, "ExtrinsicObject").values()
        repo_id = next(
            s.findtext(f"{{{v.NS_RIM}}}ValueList/{{{v.NS_RIM}}}Value")
            for s in entry.iter(f"{{{v.NS_RIM}}}Slot")
            if s.get("name") == "repositoryUniqueId"
        )
        everything_sent = everything(server.url, standards, "13116900216^^^&2.16.578.1.12.4.1.4.1&ISO")
        status, errors = remove(f"{server.url}/registry", sorted(everything_sent), standards)
        assert status == v.RESPONSE_SUCCESS, errors
        assert everything(server.url, standards, "13116900216^^^&2.16.578.1.12.4.1.4.1&ISO") == set()
        got, found = client.retrieve(repo_id or "", [sub.documents[0].unique_id or ""], tmp_path / "out")
    assert got.ok and found[0].path.read_bytes() == source.read_bytes()
