"""SOAP 1.2 faults as the HTTP binding and the fault rules give them, seen over real HTTP.

SOAP 1.2 Part 2 §7.5.2.2 (Table 20): env:Sender is HTTP 400, every other code 500. Part 1 §5.4.8:
a MustUnderstand fault names each header block not understood in an env:NotUnderstood block;
§5.4.7: a VersionMismatch fault carries env:Upgrade naming the envelope this node supports.
WS-Addressing 1.0 SOAP Binding §6: a fault answering a message whose wsa:MessageID was read
relates to it (wsa:RelatesTo).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from lxml import etree
from support import RunningServer, make_config, new_database

from xds import safexml
from xds.metadata import vocabulary as v
from xds.soap.envelope import envelope_bytes

ENV = "{" + v.NS_SOAP12 + "}"
WSA = "{" + v.NS_WSA + "}"
QUERY = f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}"/>'.encode()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("faults")
    with new_database(tmp) as url, RunningServer(make_config(tmp / "data", url)) as server:
        yield f"{server.url}/registry"


def post(url: str, data: bytes) -> tuple[int, etree._Element]:
    response = httpx.post(url, content=data, headers={"Content-Type": "application/soap+xml"}, timeout=30)
    return response.status_code, safexml.parse(response.content)


def code_of(answer: etree._Element) -> str:
    return answer.findtext(f"{ENV}Body/{ENV}Fault/{ENV}Code/{ENV}Value") or ""


def header_blocks(answer: etree._Element, tag: str) -> list[etree._Element]:
    header = answer.find(ENV + "Header")
    return [] if header is None else header.findall(tag)


def qname(element: etree._Element) -> str:
    prefix, _, local = element.get("qname", "").partition(":")
    return f"{{{element.nsmap.get(prefix)}}}{local}"


def test_must_understand_is_500_and_names_every_block(registry: str) -> None:
    blocks = [
        f'<a:Thing xmlns:a="urn:a" xmlns:env="{v.NS_SOAP12}" env:mustUnderstand="true"/>'.encode(),
        f'<b:Other xmlns:b="urn:b" xmlns:env="{v.NS_SOAP12}" env:mustUnderstand="1"/>'.encode(),
    ]
    data = envelope_bytes(v.ACTION_STORED_QUERY, QUERY, message_id="urn:uuid:mu-1", extra_headers=blocks)
    status, answer = post(registry, data)
    assert (status, code_of(answer)) == (500, "env:MustUnderstand")
    named = [qname(e) for e in header_blocks(answer, ENV + "NotUnderstood")]
    assert named == ["{urn:a}Thing", "{urn:b}Other"]
    assert [e.text for e in header_blocks(answer, WSA + "RelatesTo")] == ["urn:uuid:mu-1"]


def test_version_mismatch_is_500_with_upgrade(registry: str) -> None:
    soap11 = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><x/></e:Body></e:Envelope>'
    )
    status, answer = post(registry, soap11)
    assert (status, code_of(answer)) == (500, "env:VersionMismatch")
    (upgrade,) = header_blocks(answer, ENV + "Upgrade")
    supported = upgrade.find(ENV + "SupportedEnvelope")
    assert supported is not None and qname(supported) == f"{{{v.NS_SOAP12}}}Envelope"


@pytest.mark.parametrize(
    "data",
    [
        envelope_bytes("urn:example:unknown-action", QUERY, message_id="urn:uuid:s-1"),  # after parsing
        envelope_bytes(v.ACTION_STORED_QUERY, b"<x/><y/>", message_id="urn:uuid:s-1"),  # two payloads
    ],
    ids=["unknown-action", "two-payloads"],
)
def test_sender_faults_are_400_and_relate_to_the_message(registry: str, data: bytes) -> None:
    status, answer = post(registry, data)
    assert (status, code_of(answer)) == (400, "env:Sender")
    assert [e.text for e in header_blocks(answer, WSA + "RelatesTo")] == ["urn:uuid:s-1"]


def test_a_fault_for_a_message_never_read_relates_to_nothing(registry: str) -> None:
    status, answer = post(registry, b"<not-closed>")
    assert (status, code_of(answer)) == (400, "env:Sender")
    assert header_blocks(answer, WSA + "RelatesTo") == []
