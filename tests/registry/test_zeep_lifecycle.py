"""ITI-57 Update Document Set, ITI-92 Restricted Update Document Set and ITI-62 Delete Document Set
called by a zeep client built from the served ``/registry?wsdl`` alone (ITI TF-2 §3.57.4.1.2, §3.92.4,
§3.62.4: the operations, messages and SOAP actions the IHE WSDLs declare), over real HTTP."""

from __future__ import annotations

import random
from pathlib import Path

from lifecycle import new_version, objects, q, query, status_update, update_set, version
from support import RunningServer, local_only_transport, zeep_send

from xds import samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.model import LocalizedString, Submission
from xds.registry.register import assign_uuids

A, D = v.STATUS_APPROVED, v.STATUS_DEPRECATED
PLACEHOLDER = {"RegistryObjectList": {"Identifiable": []}}


def registry_client(url: str):  # type: ignore[no-untyped-def]
    import zeep

    transport = local_only_transport(url)
    client = zeep.Client(f"{url}/registry?wsdl", transport=transport, settings=zeep.Settings(strict=False))
    return client, client.bind("DocumentRegistry_Service", "DocumentRegistry_Port_Soap12"), transport


def send(client, service, operation: str, submission: Submission) -> None:  # type: ignore[no-untyped-def]
    response, result = zeep_send(
        client, service, operation, ebrim.submit_objects_request(submission), **PLACEHOLDER
    )
    assert response.status_code == 200 and result.status == v.RESPONSE_SUCCESS, response.text[:800]


def entries(url: str, standards: Path, lid: str) -> list[tuple[str | None, str | None]]:
    answer = query(
        f"{url}/registry",
        v.SQ_GET_DOCUMENTS,
        {"$XDSDocumentEntryLogicalID": [q(lid)], "$MetadataLevel": ["2"]},
        standards,
    )
    return sorted((version(el), el.get("status")) for el in objects(answer, "ExtrinsicObject").values())


def test_zeep_from_the_served_wsdl_updates_restricts_and_deletes(
    server: RunningServer, standards: Path
) -> None:
    client, reg, transport = registry_client(server.url)
    declared = set(reg._binding._operations)
    assert {
        "DocumentRegistry_UpdateDocumentSet",
        "DocumentRegistry_RestrictedUpdateDocumentSet",
        "DocumentRegistry_DeleteDocumentSet",
    } <= declared
    assert all(url.startswith(f"{server.url}/registry?") for url in transport.fetched)

    sample = samples.submission(documents=2, rng=random.Random())
    assign_uuids(sample.submission)
    send(client, reg, "DocumentRegistry_RegisterDocumentSet-b", sample.submission)
    first, second = sample.documents

    # ITI-57: the first entry's status Approved -> Deprecated
    ss = update_set(sample.patient)
    send(
        client, reg, "DocumentRegistry_UpdateDocumentSet", Submission([ss, status_update(ss, first.id, A, D)])
    )
    assert entries(server.url, standards, first.id) == [("1", D)]

    # ITI-92: a new version of the second entry with a corrected title
    ss = update_set(sample.patient)
    new, member = new_version(second, "1", ss)
    new.lid = second.id
    new.name = [LocalizedString("Rettet tittel")]
    send(client, reg, "DocumentRegistry_RestrictedUpdateDocumentSet", Submission([ss, new, member]))
    assert entries(server.url, standards, second.id) == [("1", D), ("2", A)]

    # ITI-62: a whole other submission removed
    gone = samples.submission(sample.patient, rng=random.Random())
    assign_uuids(gone.submission)
    send(client, reg, "DocumentRegistry_RegisterDocumentSet-b", gone.submission)
    refs = {"ObjectRefList": {"_value_1": [{"ObjectRef": {"id": o.id}} for o in gone.submission.objects]}}
    result = reg.DocumentRegistry_DeleteDocumentSet(**refs)
    assert result.status == v.RESPONSE_SUCCESS, result
    assert entries(server.url, standards, gone.documents[0].id) == []
