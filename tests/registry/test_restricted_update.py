"""ITI-92 Restricted Update Document Set over real HTTP (ITI TF-2 §3.92.4.1.3, RMU): new DocumentEntry
versions through the ITI-57 machinery, under the rules of what a restricted update may change."""

from __future__ import annotations

import random
from pathlib import Path

from lifecycle import new_version, objects, q, query, status_update, submit, update_set, version

from xds import samples
from xds.metadata import vocabulary as v
from xds.metadata.model import Code, LocalizedString, Submission
from xds.registry.register import assign_uuids

RMU = v.ACTION_RESTRICTED_UPDATE
_NOT_ON_DEMAND = ("hash", "size", "creationTime", "legalAuthenticator", "serviceStartTime", "serviceStopTime")


def registered(url: str, standards: Path, **kwargs):  # type: ignore[no-untyped-def]
    sample = samples.submission(rng=random.Random(), **kwargs)
    assign_uuids(sample.submission)
    assert submit(f"{url}/registry", v.ACTION_REGISTER, sample.submission, standards)[0] == v.RESPONSE_SUCCESS
    return sample


def restricted(url: str, standards: Path, *objs):  # type: ignore[no-untyped-def]
    return submit(f"{url}/registry", RMU, Submission(objects=list(objs)), standards)


def versioned(doc, patient: str):  # type: ignore[no-untyped-def]
    ss = update_set(patient)
    new, member = new_version(doc, "1", ss)
    new.lid = doc.id
    return ss, new, member


def test_a_restricted_update_makes_a_new_version(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards)
    doc = sample.documents[0]
    ss, new, member = versioned(doc, sample.patient)
    new.name = [LocalizedString("Rettet tittel")]
    conf = new.classifications_of(v.DE_CONFIDENTIALITY_CODE)[0]
    conf.node_representation = "NORS"  # confidentiality raised
    conf.set_slot("codingScheme", ["2.16.578.1.12.4.1.1.9603"])
    new.set_slot("hash", ["da39a3ee5e6b4b0d3255bfef95601890afd80709"])  # the profile lets these change
    status, errors = restricted(server.url, standards, ss, new, member)
    assert status == v.RESPONSE_SUCCESS, errors
    answer = query(
        f"{server.url}/registry",
        v.SQ_GET_DOCUMENTS,
        {"$XDSDocumentEntryLogicalID": [q(doc.id)], "$MetadataLevel": ["2"]},
        standards,
    )
    found = objects(answer, "ExtrinsicObject")
    assert sorted((version(el), el.get("status")) for el in found.values()) == [
        ("1", v.STATUS_DEPRECATED),
        ("2", v.STATUS_APPROVED),
    ]
    assert Code("NORS", "2.16.578.1.12.4.1.1.9603").as_query_value()  # (the code form stored)


def on_demand(doc) -> None:  # type: ignore[no-untyped-def]
    """The entry made On-Demand, valid as such (none of the attributes only a stable entry has)."""
    doc.object_type = v.DOC_ENTRY_ON_DEMAND
    doc.slots = [s for s in doc.slots if s.name not in _NOT_ON_DEMAND]


def test_what_a_restricted_update_may_not_change(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards, with_folder=True)
    doc, pid = sample.documents[0], sample.patient
    cases = [
        (lambda d: d.set_slot("repositoryUniqueId", ["1.2.3.4.5"]), v.UnmodifiableMetadataError),
        (on_demand, v.UnmodifiableMetadataError),
        (lambda d: d.set_slot("sourcePatientId", ["1^^^&1.2.3&ISO"]), v.UnmodifiableMetadataError),
        (
            lambda d: d.set_slot("documentAvailability", [v.DOCUMENT_AVAILABILITY_OFFLINE]),
            v.UnmodifiableMetadataError,
        ),
        (lambda d: d.set_external_id(v.DE_UNIQUE_ID, samples.new_oid()), v.XDSMetadataIdentifierError),
    ]
    for change, code in cases:
        ss, new, member = versioned(doc, pid)
        change(new)
        status, errors = restricted(server.url, standards, ss, new, member)
        assert [e.code for e in errors] == [code], (code, errors)
    other = samples.patient_cx(samples.person_number(random.Random(5)))
    ss, new, member = versioned(doc, other)
    new.set_external_id(v.DE_PATIENT_ID, other)
    assert [e.code for e in restricted(server.url, standards, ss, new, member)[1]] == [
        v.XDSPatientIDReconciliationError
    ]
    # no folders, no status changes, no first versions
    ss = update_set(pid)
    folder, folder_member = new_version(sample.submission.folders[0], "1", ss)
    folder.lid = sample.submission.folders[0].id
    assert [e.code for e in restricted(server.url, standards, ss, folder, folder_member)[1]] == [
        v.XDSMetadataUpdateOperationError
    ]
    ss = update_set(pid)
    change = status_update(ss, doc.id, v.STATUS_APPROVED, v.STATUS_DEPRECATED)
    assert [e.code for e in restricted(server.url, standards, ss, change)[1]] == [
        v.XDSMetadataUpdateOperationError
    ]
    fresh = samples.submission(pid, rng=random.Random())
    assert v.XDSMetadataUpdateOperationError in [
        e.code for e in restricted(server.url, standards, *fresh.submission.objects)[1]
    ]


def test_a_deprecated_entry_stays_deprecated(server, standards: Path) -> None:  # type: ignore[no-untyped-def]
    sample = registered(server.url, standards)
    doc = sample.documents[0]
    ss = update_set(sample.patient)
    change = status_update(ss, doc.id, v.STATUS_APPROVED, v.STATUS_DEPRECATED)
    assert submit(
        f"{server.url}/registry", v.ACTION_UPDATE_DOCUMENT_SET, Submission([ss, change]), standards
    )[0] == (v.RESPONSE_SUCCESS)
    ss, new, member = versioned(doc, sample.patient)
    assert restricted(server.url, standards, ss, new, member)[0] == v.RESPONSE_SUCCESS
    answer = query(
        f"{server.url}/registry",
        v.SQ_GET_DOCUMENTS,
        {"$XDSDocumentEntryUniqueId": [q(doc.unique_id or "")]},
        standards,
    )
    (newest,) = objects(answer, "ExtrinsicObject").values()
    assert (version(newest), newest.get("status")) == ("2", v.STATUS_DEPRECATED)
