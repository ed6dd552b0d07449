"""``[gateway] documents_only``: Norway's national rule that associations, folders and submission
sets are not returned across the gateway (ITI-38 at /xca/query, trust model off)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import RunningServer, make_config, new_database

from xds import consumer, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request

HOME = "urn:oid:2.16.578.1.12.4.1.7.9.77"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, samples.Sample]]:
    tmp: Path = tmp_path_factory.mktemp("documents-only")
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url, home_community_id=HOME)
        cfg.gateway.documents_only = True
        with RunningServer(cfg) as server:
            sample = samples.submission(documents=2, with_folder=True, rng=random.Random(uuid.uuid4().int))
            envelope, ctype = build_request(
                v.ACTION_REGISTER, ebrim.submit_objects_request_bytes(sample.submission)
            )
            r = httpx.post(f"{server.url}/registry", content=envelope, headers={"Content-Type": ctype})
            assert v.RESPONSE_SUCCESS.encode() in r.content, r.text
            yield server, sample


def ask(server: RunningServer, query: str, patient: str, return_type: str, where: str) -> consumer.Answer:
    body = consumer.adhoc_query_request(
        query, consumer.standard_parameters(query, patient=patient), return_type=return_type
    )
    return consumer.stored_query(f"{server.url}{where}", body)


@pytest.mark.parametrize("return_type", [v.RETURN_LEAF_CLASS, v.RETURN_OBJECT_REF])
def test_only_document_entries_cross_the_gateway(served, return_type: str) -> None:  # type: ignore[no-untyped-def]
    server, sample = served
    local = ask(server, "GetAll", sample.patient, return_type, "/registry")
    assert len(local.objects) > 2  # the registry itself answers folders, sets and associations
    across = ask(server, "GetAll", sample.patient, return_type, "/xca/query")
    assert across.status == v.RESPONSE_SUCCESS, across.errors
    tags = {o.tag.split("}")[1] for o in across.objects}
    assert tags == ({"ExtrinsicObject"} if return_type == v.RETURN_LEAF_CLASS else {"ObjectRef"})
    assert len(across.objects) == 2 and all(o.get("home") == HOME for o in across.objects)


def test_queries_about_folders_and_sets_answer_nothing(served) -> None:  # type: ignore[no-untyped-def]
    server, sample = served
    for query in ("FindFolders", "FindSubmissionSets"):
        assert ask(server, query, sample.patient, v.RETURN_LEAF_CLASS, "/registry").objects
        across = ask(server, query, sample.patient, v.RETURN_LEAF_CLASS, "/xca/query")
        assert across.status == v.RESPONSE_SUCCESS and across.objects == []


def test_zeep_from_the_served_wsdl_asks_cross_gateway_query(served) -> None:  # type: ignore[no-untyped-def]
    """A zeep client built from /xca/query?wsdl (and the schemas it serves, nothing else) sends ITI-38
    with the WSDL's action and reads the answer with the ebRS schemas."""
    import zeep
    from support import local_only_transport
    from zeep.plugins import HistoryPlugin

    server, sample = served
    history = HistoryPlugin()
    client = zeep.Client(
        f"{server.url}/xca/query?wsdl",
        transport=local_only_transport(server.url),
        settings=zeep.Settings(strict=False),
        plugins=[history],
    )
    gateway = client.bind("RespondingGatewayQuery_Service", "RespondingGatewayQuery_Port_Soap12")

    def slot(name: str, value: str) -> dict[str, object]:
        return {"name": name, "ValueList": {"_value_1": [{"Value": value}]}}

    result = gateway.RespondingGateway_CrossGatewayQuery(
        ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
        AdhocQuery={
            "id": v.SQ_FIND_DOCUMENTS,
            "home": HOME,
            "Slot": [
                slot("$XDSDocumentEntryPatientId", f"'{sample.patient}'"),
                slot("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
        },
    )
    assert result.status == v.RESPONSE_SUCCESS
    envelope = history.last_received["envelope"]
    assert envelope.findtext(f"{{{v.NS_SOAP12}}}Header/{{{v.NS_WSA}}}Action") == v.ACTION_XCA_QUERY_RESPONSE
    refs = envelope.findall(f".//{{{v.NS_RIM}}}ObjectRef")
    assert len(refs) == 2 and {r.get("home") for r in refs} == {HOME}
