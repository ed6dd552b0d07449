"""What the initiating gateway does with a community's answer it should not take in whole: an
answer envelope larger than ``[server] max_body_mb`` is cut off as it arrives (the gateway does not
hold it in memory) and reported as that community's error, for a query and for a retrieve."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from support import RunningServer, free_port, make_config

from xds import safexml
from xds.config import CommunityConfig
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response
from xds.soap.envelope import build_request

HOME = "urn:oid:2.16.578.1.12.4.1.7.9.77"
PADDING = 3 * 2**20  # three times the gateway's 1 MB limit


def _answer(payload: bytes) -> bytes:
    comment = b"<!--" + b"x" * PADDING + b"-->"
    return (
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
        b' xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action>'
        + b"%s"
        + b"</a:Action></s:Header><s:Body>"
        + payload
        + comment
        + b"</s:Body></s:Envelope>"
    )


QUERY_ANSWER = (
    _answer(
        f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}" '
        f'status="{v.RESPONSE_SUCCESS}"><rim:RegistryObjectList/></query:AdhocQueryResponse>'.encode()
    )
    % (v.ACTION_XCA_QUERY + "Response").encode()
)
RETRIEVE_ANSWER = (
    _answer(
        f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{v.NS_XDSB}"><rs:RegistryResponse xmlns:rs="{v.NS_RS}" '
        f'status="{v.RESPONSE_SUCCESS}"/></xdsb:RetrieveDocumentSetResponse>'.encode()
    )
    % (v.ACTION_XCA_RETRIEVE + "Response").encode()
)


class _Community(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = QUERY_ANSWER if self.path.endswith("query") else RETRIEVE_ANSWER
        self.send_response(200)
        self.send_header("Content-Type", "application/soap+xml; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the gateway stopped reading
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    community = ThreadingHTTPServer(("127.0.0.1", 0), _Community)
    thread = threading.Thread(target=community.serve_forever, daemon=True)
    thread.start()
    port = community.server_address[1]
    config = make_config(tmp_path / "data", database_url)
    config.server.port = free_port()
    config.server.max_body_mb = 1
    config.communities = [
        CommunityConfig(
            home_community_id=HOME,
            name="Storpratende kommune",
            registry_url=f"http://127.0.0.1:{port}/xca/query",
            repository_url=f"http://127.0.0.1:{port}/xca/retrieve",
        )
    ]
    try:
        with RunningServer(config) as running:
            yield running
    finally:
        community.shutdown()
        community.server_close()


def _post(url: str, action: str, body: bytes):  # type: ignore[no-untyped-def]
    data, ctype = build_request(action, body, to=url)
    response = httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    payload = safexml.parse(response.content).find(f"{{{v.NS_SOAP12}}}Body")[0]  # type: ignore[index]
    rr = (
        payload
        if payload.tag.endswith("RegistryResponse")
        else payload.find(f"{{{v.NS_RS}}}RegistryResponse")
    )
    if rr is None:
        rr = payload
    return parse_registry_response(rr)


def test_an_oversized_community_answer_is_that_communitys_error(gateway: RunningServer) -> None:
    find = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        '<query:ResponseOption returnType="LeafClass"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        "<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'13116900216^^^&amp;2.16.578.1.12.4.1.4.1&amp;ISO'</rim:Value></rim:ValueList></rim:Slot>"
        "<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>"
        "</rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()
    status, errors = _post(f"{gateway.url}/ig/registry", v.ACTION_STORED_QUERY, find)
    assert status == v.RESPONSE_FAILURE
    assert [(e.code, e.location) for e in errors] == [(v.XDSRegistryError, HOME)]
    assert "larger than" in errors[0].context
    retrieve = (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:HomeCommunityId>{HOME}</xdsb:HomeCommunityId><xdsb:RepositoryUniqueId>1.2.3</xdsb:RepositoryUniqueId>"
        "<xdsb:DocumentUniqueId>1.2.3.4</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"
    ).encode()
    status, errors = _post(f"{gateway.url}/ig/repository", v.ACTION_RETRIEVE, retrieve)
    assert status == v.RESPONSE_FAILURE
    assert [(e.code, e.location) for e in errors] == [(v.XDSRepositoryError, HOME)]
    assert "larger than" in errors[0].context
    assert httpx.get(f"{gateway.url}/health", timeout=10).text == "ok\n"
