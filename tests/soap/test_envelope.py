"""SOAP 1.2 envelopes and faults (SOAP 1.2 Part 1 §5, WS-Addressing 1.0; ITI TF-2 Appendix V)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from xds import safexml
from xds.metadata import vocabulary as v
from xds.soap.envelope import SoapFault, build_request, envelope_bytes, fault_bytes, parse_envelope


@pytest.fixture(scope="module")
def soap_schema(standards: Path) -> etree.XMLSchema | None:
    found = list(standards.rglob("soap-envelope*.xsd")) + list(standards.rglob("soap12*.xsd"))
    return etree.XMLSchema(etree.parse(str(found[0]))) if found else None


def test_request_round_trip() -> None:
    data, ctype = build_request("urn:ihe:iti:2007:RegisterDocumentSet-b", b"<x/>", message_id="urn:uuid:1")
    assert 'action="urn:ihe:iti:2007:RegisterDocumentSet-b"' in ctype
    request = parse_envelope(data)
    assert request.action == v.ACTION_REGISTER and request.message_id == "urn:uuid:1"
    assert request.reply_to == "http://www.w3.org/2005/08/addressing/anonymous"
    assert request.body.tag == "x"


def test_response_carries_relates_to() -> None:
    data = envelope_bytes("urn:resp", b"<ok/>", relates_to="urn:uuid:1")
    root = safexml.parse(data)
    assert root.findtext(f".//{{{v.NS_WSA}}}RelatesTo") == "urn:uuid:1"
    assert root.findtext(f".//{{{v.NS_WSA}}}Action") == "urn:resp"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"not xml", "Sender"),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><x/></e:Body></e:Envelope>',
            "VersionMismatch",
        ),
        (b"<Envelope/>", "Sender"),
        (f'<e:Envelope xmlns:e="{v.NS_SOAP12}"><e:Header/></e:Envelope>'.encode(), "Sender"),
        (f'<e:Envelope xmlns:e="{v.NS_SOAP12}"><e:Body/></e:Envelope>'.encode(), "Sender"),
        (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "Sender"),
    ],
)
def test_bad_envelopes(data: bytes, code: str) -> None:
    with pytest.raises(SoapFault) as exc:
        parse_envelope(data)
    assert exc.value.code == code
    assert exc.value.http_status == 400


def test_fault_is_well_formed_and_parses_back(soap_schema: etree.XMLSchema | None) -> None:
    data = fault_bytes(
        SoapFault("Sender", "bad <thing> & more", "wsa:ActionNotSupported", "detail"), relates_to="urn:1"
    )
    root = safexml.parse(data)
    if soap_schema is not None:
        soap_schema.assertValid(root)
    with pytest.raises(SoapFault) as exc:
        parse_envelope(data)
    assert exc.value.code == "Sender" and exc.value.reason == "bad <thing> & more"
    assert exc.value.subcode and exc.value.subcode.endswith("ActionNotSupported")
