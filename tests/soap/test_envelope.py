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
    assert exc.value.http_status == (400 if code == "Sender" else 500)  # SOAP 1.2 Part 2 §7.5.2.2


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


_E = f'<e:Envelope xmlns:e="{v.NS_SOAP12}" xmlns:a="{v.NS_WSA}">'
_H = "<e:Header><a:Action>urn:x</a:Action></e:Header>"


@pytest.mark.parametrize(
    ("data", "subcode"),
    [
        (_E + _H + "<e:Body><x/></e:Body><e:Body><y/></e:Body></e:Envelope>", None),  # two Bodies
        (_E + "<e:Body><x/></e:Body>" + _H + "</e:Envelope>", None),  # Body before Header
        (_E + _H + _H + "<e:Body><x/></e:Body></e:Envelope>", None),  # two Headers
        (_E + _H + "<e:Body><x/></e:Body><extra/></e:Envelope>", None),  # something after the Body
        (_E + _H + "<e:Body><x/><y/></e:Body></e:Envelope>", None),  # two request elements
        (
            _E + "<e:Header><a:Action>urn:x</a:Action><a:Action>urn:y</a:Action></e:Header>"
            "<e:Body><x/></e:Body></e:Envelope>",
            "wsa:InvalidAddressingHeader",
        ),
        (  # a request that is a Fault: never answered as if the service had failed
            _E + _H + "<e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code>"
            '<e:Reason><e:Text xml:lang="en">x</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>',
            None,
        ),
    ],
    ids=["two-bodies", "body-first", "two-headers", "after-body", "two-payloads", "two-actions", "fault"],
)
def test_requests_breaking_the_envelope_rules_are_the_senders_fault(data: str, subcode: str | None) -> None:
    """SOAP 1.2 Part 1 §5.1 (an optional Header, then one Body), WS-Addressing 1.0 Core §3.2 (one
    Action): a request that breaks them is refused rather than half read."""
    with pytest.raises(SoapFault) as exc:
        parse_envelope(data.encode(), request=True)
    assert (exc.value.code, exc.value.subcode) == ("Sender", subcode)


def test_mandatory_header_blocks_not_understood_are_named() -> None:
    from xds.soap.envelope import WSA_HEADERS, not_understood

    must = '<s:Security xmlns:s="urn:sec" e:mustUnderstand="true"/>'
    other_role = '<s:Log xmlns:s="urn:sec" e:mustUnderstand="1" e:role="urn:some-other-node"/>'
    optional = '<s:Note xmlns:s="urn:sec"/>'
    for headers, missed in ((must, "{urn:sec}Security"), (other_role + optional, None), ("", None)):
        data = f"{_E}<e:Header><a:Action e:mustUnderstand='1'>urn:x</a:Action>{headers}</e:Header><e:Body><x/></e:Body></e:Envelope>"
        request = parse_envelope(data.encode(), request=True)
        assert not_understood(request.header, WSA_HEADERS) == missed


def test_a_fault_never_carries_a_code_soap_does_not_define() -> None:
    data = fault_bytes(SoapFault("<evil/>", "reason"))
    root = safexml.parse(data)  # well-formed
    assert root.findtext(f".//{{{v.NS_SOAP12}}}Code/{{{v.NS_SOAP12}}}Value") == "env:Receiver"
