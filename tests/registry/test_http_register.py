"""ITI-42 over real HTTP: a zeep client built from the official WSDL, and hostile raw requests.

Every response is validated against the official ebRS 3.0 schemas.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from lxml import etree
from support import zeep_send

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response
from xds.soap.envelope import build_request

SOAP12 = "application/soap+xml; charset=UTF-8"


@pytest.fixture(scope="session")
def rs_schema(standards: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(standards / "iti/schema/ebRS/rs.xsd")))


@pytest.fixture(scope="session")
def zeep_registry_client(registry_wsdl: str):  # type: ignore[no-untyped-def]
    import zeep

    return zeep.Client(registry_wsdl)


def post(url: str, body: bytes, action: str = v.ACTION_REGISTER) -> httpx.Response:
    data, ctype = build_request(action, body, to=url)
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def soap_body(response: httpx.Response) -> etree._Element:
    env = safexml.parse(response.content)
    body = env.find(f"{{{v.NS_SOAP12}}}Body")
    assert body is not None
    return body[0]


def test_zeep_client_registers_over_http(server, zeep_registry_client, rs_schema) -> None:  # type: ignore[no-untyped-def]
    client = zeep_registry_client
    service = client.create_service(
        "{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12", f"{server.url}/registry"
    )
    sample = samples.submission(rng=random.Random(1), with_folder=True)
    request_el = ebrim.submit_objects_request(sample.submission)
    op = "DocumentRegistry_RegisterDocumentSet-b"
    response, result = zeep_send(client, service, op, request_el, RegistryObjectList={"Identifiable": []})
    assert response.status_code == 200, response.text
    body = safexml.parse(response.content).find(f"{{{v.NS_SOAP12}}}Body")[0]
    rs_schema.assertValid(body)
    assert result.status == v.RESPONSE_SUCCESS, result
    # the same uniqueIds again: refused, and zeep reads the error list
    response, result = zeep_send(client, service, op, request_el, RegistryObjectList={"Identifiable": []})
    assert result.status == v.RESPONSE_FAILURE
    assert result.RegistryErrorList.RegistryError[0].errorCode == v.XDSDuplicateUniqueIdInRegistry


def test_failure_response_lists_every_error_and_validates(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    sample = samples.submission(rng=random.Random(2), documents=2)
    sample.documents[0].set_slot("creationTime", ["20051301"])
    sample.documents[1].set_slot("size", ["-1"])
    response = post(f"{server.url}/registry", ebrim.submit_objects_request_bytes(sample.submission))
    assert response.status_code == 200
    body = soap_body(response)
    rs_schema.assertValid(body)
    status, errors = parse_registry_response(body)
    assert status == v.RESPONSE_FAILURE
    locations = {e.location for e in errors}
    assert {"Document01", "Document02"} <= locations
    env = safexml.parse(response.content)
    action = env.find(f".//{{{v.NS_WSA}}}Action")
    assert action is not None and action.text == v.ACTION_REGISTER_RESPONSE
    assert env.find(f".//{{{v.NS_WSA}}}RelatesTo") is not None


@pytest.mark.parametrize(
    "payload, content_type",
    [
        (b"this is not xml", SOAP12),
        (b"<a><b></a>", SOAP12),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', SOAP12),
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
            b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>',
            SOAP12,
        ),
        (b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"/>', SOAP12),
        (b"--x\r\nContent-Type: text/plain\r\n\r\nhalf a multipart", "multipart/related; boundary=x"),
    ],
)
def test_bad_envelopes_get_a_fault_and_the_server_keeps_serving(server, payload, content_type) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(f"{server.url}/registry", content=payload, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 600
    assert b"Fault" in response.content and b"/etc/passwd" not in response.content
    assert b"root:" not in response.content and b"aaaaaaaaaaaaaaaaaaaa" not in response.content
    good = samples.submission(rng=random.Random())
    ok = post(f"{server.url}/registry", ebrim.submit_objects_request_bytes(good.submission))
    assert parse_registry_response(soap_body(ok))[0] == v.RESPONSE_SUCCESS


def test_unknown_action_is_a_soap_fault(server) -> None:  # type: ignore[no-untyped-def]
    response = post(f"{server.url}/registry", b'<x xmlns="urn:x"/>', action="urn:example:NoSuchAction")
    assert response.status_code >= 400
    assert b"ActionNotSupported" in response.content


def test_wrong_body_element_is_an_xds_error(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    response = post(f"{server.url}/registry", b'<x xmlns="urn:x"/>')
    body = soap_body(response)
    rs_schema.assertValid(body)
    status, errors = parse_registry_response(body)
    assert status == v.RESPONSE_FAILURE and errors[0].code == v.XDSRegistryMetadataError


def test_mtom_request_is_accepted(server) -> None:  # type: ignore[no-untyped-def]
    from xds.soap.mtom import build_mtom_request

    good = samples.submission(rng=random.Random())
    data, ctype = build_mtom_request(
        v.ACTION_REGISTER, ebrim.submit_objects_request_bytes(good.submission), []
    )
    response = httpx.post(f"{server.url}/registry", content=data, headers={"Content-Type": ctype})
    assert response.status_code == 200
    assert b"ResponseStatusType:Success" in response.content


def test_wsdl_is_served(server) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/registry?wsdl")
    assert response.status_code == 200
    wsdl = safexml.parse(response.content)
    assert (
        wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap12/}address").get("location").endswith("/registry")
    )
