"""ITI-18 over real HTTP: a zeep client built from the official registry WSDL, and raw SOAP requests.

zeep renders the AdhocQueryRequest from the WSDL's schemas itself; every answer is validated
against the official ebRS 3.0 query schema (ITI TF-2 §3.18.4.1.2, §3.18.4.1.3).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree
from support import RunningServer, make_config

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response
from xds.soap.envelope import build_request

BINDING = "{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12"
QUERY_OPERATION = "DocumentRegistry_RegistryStoredQuery"
_RIM = "{" + v.NS_RIM + "}"


@pytest.fixture(scope="session")
def query_schema(standards: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(standards / "iti/schema/ebRS/query.xsd")))


@pytest.fixture(scope="module")
def zeep_client(registry_wsdl: str):  # type: ignore[no-untyped-def]
    import zeep
    from zeep.plugins import HistoryPlugin

    history = HistoryPlugin()
    # zeep cannot parse the members of a substitution group (rim:Identifiable, which the objects of
    # a RegistryObjectList are) in strict mode; the raw answer is checked against query.xsd instead
    client = zeep.Client(
        registry_wsdl,
        plugins=[history],
        settings=zeep.Settings(strict=False),
    )
    client.history = history  # type: ignore[attr-defined]
    return client


def post(url: str, body: bytes, action: str) -> httpx.Response:
    data, ctype = build_request(action, body, to=url)
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def envelope_parts(response: httpx.Response) -> tuple[str, etree._Element]:
    """The wsa:Action and the body payload of a SOAP answer."""
    env = safexml.parse(response.content)
    action = env.find(f".//{{{v.NS_WSA}}}Action")
    body = env.find(f"{{{v.NS_SOAP12}}}Body")
    assert action is not None and body is not None
    return action.text or "", body[0]


def register(url: str, sample: samples.Sample) -> None:
    response = post(url, ebrim.submit_objects_request_bytes(sample.submission), v.ACTION_REGISTER)
    status, errors = parse_registry_response(envelope_parts(response)[1])
    assert status == v.RESPONSE_SUCCESS, errors


def adhoc_query(query_id: str, slots: dict[str, list[str]], return_type: str = "LeafClass") -> bytes:
    values = "".join(
        f'<rim:Slot name="{name}"><rim:ValueList>'
        + "".join(f"<rim:Value>{x.replace('&', '&amp;')}</rim:Value>" for x in texts)
        + "</rim:ValueList></rim:Slot>"
        for name, texts in slots.items()
    )
    return (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="{return_type}" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{query_id}">{values}</rim:AdhocQuery></query:AdhocQueryRequest>'
    ).encode()


def zeep_query(client, url: str, query_id: str, slots: dict[str, list[str]], return_type: str):  # type: ignore[no-untyped-def]
    """Call RegistryStoredQuery through zeep; its parsed result and the raw AdhocQueryResponse."""
    service = client.create_service(BINDING, url)
    result = service[QUERY_OPERATION](
        ResponseOption={"returnType": return_type, "returnComposedObjects": True},
        AdhocQuery={
            "id": query_id,
            "Slot": [
                {"name": name, "ValueList": {"_value_1": [{"Value": text} for text in texts]}}
                for name, texts in slots.items()
            ],
        },
    )
    envelope = client.history.last_received["envelope"]
    body = envelope.find(f"{{{v.NS_SOAP12}}}Body")[0]
    return result, body


@pytest.fixture
def loaded(server: RunningServer) -> Iterator[tuple[str, samples.Sample, samples.Sample]]:
    """A served registry holding two documents and a folder of one patient, one of another."""
    url = f"{server.url}/registry"
    rng = random.Random(5)
    first = samples.submission(rng=rng, documents=2, with_folder=True)
    other = samples.submission(rng=rng)
    register(url, first)
    register(url, other)
    yield url, first, other


def test_zeep_find_documents_then_get_documents(loaded, zeep_client, query_schema) -> None:  # type: ignore[no-untyped-def]
    url, first, _ = loaded
    find = {
        "$XDSDocumentEntryPatientId": [f"'{first.patient}'"],
        "$XDSDocumentEntryStatus": [f"('{v.STATUS_APPROVED}')"],
    }
    result, body = zeep_query(zeep_client, url, v.SQ_FIND_DOCUMENTS, find, "ObjectRef")
    query_schema.assertValid(body)
    assert result.status == v.RESPONSE_SUCCESS
    refs = [el.get("id") for el in body.iter(_RIM + "ObjectRef")]
    assert len(refs) == 2 and all(r.startswith("urn:uuid:") for r in refs)

    result, body = zeep_query(zeep_client, url, v.SQ_FIND_DOCUMENTS, find, "LeafClass")
    query_schema.assertValid(body)
    assert result.status == v.RESPONSE_SUCCESS
    assert [el.get("id") for el in body.iter(_RIM + "ExtrinsicObject")] == refs

    get = {"$XDSDocumentEntryEntryUUID": ["(" + ", ".join(f"'{r}'" for r in refs) + ")"]}
    result, body = zeep_query(zeep_client, url, v.SQ_GET_DOCUMENTS, get, "LeafClass")
    query_schema.assertValid(body)
    assert result.status == v.RESPONSE_SUCCESS
    docs = ebrim.parse_registry_object_list(body.find(_RIM + "RegistryObjectList")).documents
    assert sorted(d.unique_id or "" for d in docs) == sorted(d.unique_id or "" for d in first.documents)
    assert {d.patient_id for d in docs} == {first.patient}
    assert all(d.status == v.STATUS_APPROVED for d in docs)


def test_zeep_get_documents_by_unique_id_and_errors(loaded, zeep_client, query_schema) -> None:  # type: ignore[no-untyped-def]
    url, first, other = loaded
    uid = first.documents[0].unique_id or ""
    result, body = zeep_query(
        zeep_client, url, v.SQ_GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": [f"('{uid}')"]}, "LeafClass"
    )
    query_schema.assertValid(body)
    assert [e.get("value") for e in body.iter(_RIM + "ExternalIdentifier") if e.get("value") == uid] == [uid]
    # documents of two patients as LeafClass: refused, and zeep reads the error list
    both = f"('{uid}', '{other.documents[0].unique_id}')"
    result, body = zeep_query(
        zeep_client, url, v.SQ_GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": [both]}, "LeafClass"
    )
    query_schema.assertValid(body)
    assert result.status == v.RESPONSE_FAILURE
    assert result.RegistryErrorList.RegistryError[0].errorCode == v.XDSResultNotSinglePatient


def test_raw_query_answers_with_the_response_action(loaded, query_schema) -> None:  # type: ignore[no-untyped-def]
    url, first, _ = loaded
    slots = {
        "$XDSDocumentEntryPatientId": [f"'{first.patient}'"],
        "$XDSDocumentEntryStatus": [f"('{v.STATUS_APPROVED}')"],
    }
    action, body = envelope_parts(post(url, adhoc_query(v.SQ_FIND_DOCUMENTS, slots), v.ACTION_STORED_QUERY))
    assert action == v.ACTION_STORED_QUERY_RESPONSE
    query_schema.assertValid(body)
    assert len(body.find(_RIM + "RegistryObjectList")) == 2
    # ITI-51 has its own action pair
    mpq = {
        "$XDSDocumentEntryPatientId": [f"('{first.patient}')"],
        "$XDSDocumentEntryStatus": [f"('{v.STATUS_APPROVED}')"],
    }
    response = post(url, adhoc_query(v.SQ_FIND_DOCUMENTS_MPQ, mpq), v.ACTION_MULTI_PATIENT_QUERY)
    action, body = envelope_parts(response)
    assert action == v.ACTION_MULTI_PATIENT_QUERY_RESPONSE
    query_schema.assertValid(body)
    assert len(body.find(_RIM + "RegistryObjectList")) == 2


def test_errors_over_http_validate(loaded, query_schema) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = loaded
    unknown = adhoc_query("urn:uuid:00000000-0000-0000-0000-000000000000", {})
    action, body = envelope_parts(post(url, unknown, v.ACTION_STORED_QUERY))
    query_schema.assertValid(body)
    status, errors = parse_registry_response(body)
    assert status == v.RESPONSE_FAILURE and [e.code for e in errors] == [v.XDSUnknownStoredQuery]
    missing = adhoc_query(v.SQ_FIND_DOCUMENTS, {"$XDSDocumentEntryStatus": [f"('{v.STATUS_APPROVED}')"]})
    status, errors = parse_registry_response(envelope_parts(post(url, missing, v.ACTION_STORED_QUERY))[1])
    assert [e.code for e in errors] == [v.XDSStoredQueryMissingParam]
    # a body that is not a query at all
    status, errors = parse_registry_response(
        envelope_parts(post(url, b'<x xmlns="urn:x"/>', v.ACTION_STORED_QUERY))[1]
    )
    assert status == v.RESPONSE_FAILURE and errors[0].code == v.XDSRegistryError


def test_configured_home_community_and_result_limit(tmp_path: Path, database_url: str, query_schema) -> None:  # type: ignore[no-untyped-def]
    home = "urn:oid:2.16.578.1.12.4.1.7.1.1"
    cfg = make_config(tmp_path / "data", database_url, home_community_id=home, max_query_results=1)
    with RunningServer(cfg) as server:
        url = f"{server.url}/registry"
        sample = samples.submission(rng=random.Random(9), documents=2)
        register(url, sample)
        slots = {"$XDSDocumentEntryUniqueId": [f"('{sample.documents[0].unique_id}')"]}
        _, body = envelope_parts(post(url, adhoc_query(v.SQ_GET_DOCUMENTS, slots), v.ACTION_STORED_QUERY))
        query_schema.assertValid(body)
        [doc] = list(body.find(_RIM + "RegistryObjectList"))
        assert doc.get("home") == home
        find = {
            "$XDSDocumentEntryPatientId": [f"'{sample.patient}'"],
            "$XDSDocumentEntryStatus": [f"('{v.STATUS_APPROVED}')"],
        }
        _, body = envelope_parts(
            post(url, adhoc_query(v.SQ_FIND_DOCUMENTS, find, "ObjectRef"), v.ACTION_STORED_QUERY)
        )
        query_schema.assertValid(body)
        status, errors = parse_registry_response(body)
        assert status == v.RESPONSE_FAILURE and [e.code for e in errors] == [v.XDSTooManyResults]
