"""A syslog collector over UDP (RFC 5426) and an audit message larger than one datagram can carry:
a FindDocuments whose query (base64 in ParticipantObjectQuery) is ~100 kB. The datagram cannot be
sent; the sink must not stall on it — the events after it still reach the collector, and the
database still holds the large one whole."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import pytest
from audit.conftest import recorded
from lxml import etree
from operating import find_documents
from support import RunningServer, make_config, new_database

from xds import samples
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request

PATIENT = samples.patient_cx("13116900216")


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(20)
    try:
        yield sock
    finally:
        sock.close()


def large_query(url: str) -> None:
    long = "x" * 1000
    authors = "".join(f"<rim:Value>'{long}{i:03d}%'</rim:Value>" for i in range(90))  # ~100 kB
    body = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        '<query:ResponseOption returnType="ObjectRef"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{escape(PATIENT)}'"
        "</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        "</rim:Value></rim:ValueList></rim:Slot>"
        f'<rim:Slot name="$XDSDocumentEntryAuthorPerson"><rim:ValueList>{authors}</rim:ValueList></rim:Slot>'
        "</rim:AdhocQuery></query:AdhocQueryRequest>"
    )
    data, ctype = build_request(v.ACTION_STORED_QUERY, body.encode(), to=url)
    response = httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)
    assert response.status_code == 200 and v.RESPONSE_SUCCESS.encode() in response.content, response.text[
        -900:
    ]


def test_an_event_too_large_for_a_datagram_does_not_stall_the_udp_collector(
    tmp_path: Path, collector: socket.socket, audit_schema: etree.RelaxNG
) -> None:
    port = collector.getsockname()[1]
    with new_database(tmp_path) as url:
        cfg = make_config(tmp_path / "data", url)
        cfg.audit.syslog = f"udp://127.0.0.1:{port}"
        with RunningServer(cfg) as server:
            large_query(server.url + "/registry")
            with httpx.Client(timeout=30) as http:
                find_documents(http, server.url + "/registry", PATIENT)
            stored = recorded(server.app)
            datagram = collector.recv(65536)
    assert len(stored) == 2
    sizes = sorted(len(etree.tostring(m)) for m in stored)
    assert sizes[1] > 65536 > sizes[0]  # the large one is in the database whole
    for message in stored:
        assert audit_schema.validate(message), audit_schema.error_log
    xml = datagram.decode("utf-8").split("\ufeff", 1)[1]
    assert xml == etree.tostring(min(stored, key=lambda m: len(etree.tostring(m)))).decode()
