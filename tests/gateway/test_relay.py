"""The initiating gateway relays an unsigned ITI-39 answer's documents as they arrive (no trust model
between it and its consumer): byte for byte, whatever order the community sends the parts in, within
``[server] max_body_mb`` + ``max_document_mb`` in all; an answer that breaks off is never passed on as
a complete one, and the gateway keeps serving. The community is a plain HTTP server answering what
the test tells it to, over real HTTP."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from support import RunningServer, free_port, make_config

from xds import consumer
from xds.config import CommunityConfig
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.soap.mtom import MultipartParser

HOME = "urn:oid:2.16.578.1.12.4.1.7.9.78"
REPOSITORY = "2.16.578.1.12.4.1.7.9.78.1"
HOME2 = "urn:oid:2.16.578.1.12.4.1.7.9.79"


@dataclass
class Script:
    """What the community answers: documents by uniqueId, the order of their parts, and damage."""

    documents: dict[str, bytes] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # uniqueIds, in the order their parts are sent
    missing: str = ""  # a uniqueId whose part is left out
    cut_after: int = 0  # send only this many bytes of the message (0: all of it)
    home: str = HOME
    extra: int = 0  # parts no DocumentResponse refers to, sent before the documents


def _answer(script: Script) -> tuple[bytes, str]:
    boundary = f"B{uuid.uuid4().hex}"
    cids = {uid: f"{uuid.uuid4().hex}@community" for uid in script.documents}
    responses = "".join(
        f"<xdsb:DocumentResponse><xdsb:HomeCommunityId>{script.home}</xdsb:HomeCommunityId>"
        f"<xdsb:RepositoryUniqueId>{REPOSITORY}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId><xdsb:mimeType>text/plain</xdsb:mimeType>"
        f'<xdsb:Document><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cids[uid]}"/></xdsb:Document>'
        "</xdsb:DocumentResponse>"
        for uid in script.documents
    )
    envelope = (
        f'<s:Envelope xmlns:s="{v.NS_SOAP12}" xmlns:a="{v.NS_WSA}"><s:Header>'
        f"<a:Action>{v.ACTION_XCA_RETRIEVE_RESPONSE}</a:Action></s:Header><s:Body>"
        f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{v.NS_XDSB}"><rs:RegistryResponse '
        f'xmlns:rs="{v.NS_RS}" status="{v.RESPONSE_SUCCESS}"/>{responses}</xdsb:RetrieveDocumentSetResponse>'
        "</s:Body></s:Envelope>"
    ).encode()
    out = [
        f'--{boundary}\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\n'
        "Content-ID: <root@community>\r\n\r\n".encode(),
        envelope,
    ]
    for i in range(script.extra):
        out.append(f"\r\n--{boundary}\r\nContent-ID: <extra{i}@community>\r\n\r\n".encode() + b"x" * 100)
    for uid in script.order or list(script.documents):
        if uid == script.missing:
            continue
        out.append(f"\r\n--{boundary}\r\nContent-ID: <{cids[uid]}>\r\n\r\n".encode())
        out.append(script.documents[uid])
    out.append(f"\r\n--{boundary}--\r\n".encode())
    ctype = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        'start="<root@community>"; start-info="application/soap+xml"'
    )
    return b"".join(out), ctype


class _Community(BaseHTTPRequestHandler):
    script = Script()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body, ctype = _answer(self.script)
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[: self.script.cut_after] if self.script.cut_after else body)
        except OSError:  # the gateway stopped reading
            pass

    def log_message(self, *args: object) -> None:
        pass


class _Second(_Community):
    script = Script(home=HOME2)


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    communities = [ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (_Community, _Second)]
    for community in communities:
        threading.Thread(target=community.serve_forever, daemon=True).start()
    ports = [c.server_address[1] for c in communities]
    config = make_config(tmp_path / "data", database_url)
    config.server.port = free_port()
    config.server.max_body_mb = 1
    config.server.max_document_mb = 4
    config.communities = [
        CommunityConfig(
            home_community_id=home,
            name=name,
            registry_url=f"http://127.0.0.1:{port}/xca/query",
            repository_url=f"http://127.0.0.1:{port}/xca/retrieve",
            timeout_s=10.0,
        )
        for home, name, port in zip((HOME, HOME2), ("Relékommune", "Nabokommune"), ports, strict=True)
    ]
    try:
        with RunningServer(config) as running:
            yield running
    finally:
        for community in communities:
            community.shutdown()
            community.server_close()
        _Community.script = Script()
        _Second.script = Script(home=HOME2)


def _retrieve(gateway: RunningServer, uids: list[str], out: Path) -> dict[str, bytes]:
    answer, docs = consumer.retrieve(
        f"{gateway.url}/ig/repository", [(HOME, REPOSITORY, uid) for uid in uids], out
    )
    assert answer.status == v.RESPONSE_SUCCESS, answer.errors or answer.fault
    return {d.unique_id: d.path.read_bytes() for d in docs}


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "parts in reverse order"])
def test_documents_are_relayed_byte_for_byte(gateway: RunningServer, tmp_path: Path, reverse: bool) -> None:
    documents = {
        "1.2.3.1": b"",
        "1.2.3.2": b"x",
        "1.2.3.3": os.urandom(100 * 1024),
        "1.2.3.4": os.urandom(3 * 2**20 + 7),  # larger than a relayed piece, across many reads
    }
    order = list(documents)[::-1] if reverse else list(documents)
    _Community.script = Script(documents, order)
    got = _retrieve(gateway, list(documents), tmp_path / "out")
    assert got == documents
    assert not list((Path(gateway.config.server.data_dir) / "gateway-spool").iterdir())


def _raw_retrieve(gateway: RunningServer, uids: list[str]) -> tuple[int, bytes | Exception]:
    """The gateway's answer as it arrives: the status and bytes, or what broke while reading it."""
    requests = "".join(
        f"<xdsb:DocumentRequest><xdsb:HomeCommunityId>{HOME}</xdsb:HomeCommunityId>"
        f"<xdsb:RepositoryUniqueId>{REPOSITORY}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        for uid in uids
    )
    body = f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">{requests}</xdsb:RetrieveDocumentSetRequest>'
    url = f"{gateway.url}/ig/repository"
    data, ctype = build_request(v.ACTION_RETRIEVE, body.encode(), to=url)
    with httpx.stream("POST", url, content=data, headers={"Content-Type": ctype}, timeout=30) as r:
        if not r.headers["content-type"].startswith("multipart/"):
            return r.status_code, r.read()
        try:
            parser = MultipartParser(r.headers["content-type"], spool_threshold=1 << 40)
            for chunk in r.iter_raw():
                parser.feed(chunk)
            parser.close()
        except (httpx.HTTPError, Exception) as exc:  # noqa: BLE001 - what the client saw
            return r.status_code, exc
        return r.status_code, b"complete"


@pytest.mark.parametrize(
    "damage",
    [
        Script({"1.2.3.5": os.urandom(2 * 2**20)}, missing="1.2.3.5"),
        Script({"1.2.3.6": os.urandom(2 * 2**20)}, cut_after=2**20),
        Script({"1.2.3.7": os.urandom(6 * 2**20)}),  # past max_body_mb + max_document_mb
    ],
    ids=["a part missing", "the answer breaks off", "larger than allowed"],
)
def test_a_broken_answer_is_never_passed_on_whole(gateway: RunningServer, damage: Script) -> None:
    _Community.script = damage
    status, outcome = _raw_retrieve(gateway, list(damage.documents))
    assert status == 200 and isinstance(outcome, Exception), outcome
    assert httpx.get(f"{gateway.url}/health", timeout=10).text == "ok\n"
    _Community.script = Script({"1.2.3.8": b"CRP 42 mg/L\n"})
    assert _raw_retrieve(gateway, ["1.2.3.8"]) == (200, b"complete")


def test_two_communities_are_relayed_one_after_the_other(gateway: RunningServer, tmp_path: Path) -> None:
    """The second community's answer waits, unread, while the first one's documents pass."""
    first = {"1.2.3.10": os.urandom(2 * 2**20 + 1), "1.2.3.11": b"CRP 42 mg/L\n"}
    second = {"1.2.3.20": os.urandom(2**20 - 3)}
    _Community.script = Script(first)
    _Second.script = Script(second, home=HOME2)
    wanted = [(HOME, REPOSITORY, uid) for uid in first] + [(HOME2, REPOSITORY, uid) for uid in second]
    answer, docs = consumer.retrieve(f"{gateway.url}/ig/repository", wanted, tmp_path / "out")
    assert answer.status == v.RESPONSE_SUCCESS, answer.errors or answer.fault
    assert {d.unique_id: (d.home, d.path.read_bytes()) for d in docs} == {
        **{uid: (HOME, data) for uid, data in first.items()},
        **{uid: (HOME2, data) for uid, data in second.items()},
    }


def test_an_answer_with_more_parts_than_documents_asked_for_is_refused(gateway: RunningServer) -> None:
    """A community may answer a part per document asked for (and a few for its tokens): an answer
    with 50 parts to a request for one is not taken in, whether that shows before anything was
    passed on (that community's XDSRepositoryError) or after (the answer is broken off)."""
    _Community.script = Script({"1.2.3.12": os.urandom(100_000)}, extra=50)
    status, outcome = _raw_retrieve(gateway, ["1.2.3.12"])
    if isinstance(outcome, bytes):
        from xds import safexml
        from xds.metadata.registry_response import parse_registry_response

        found = safexml.parse(outcome).find(f".//{{{v.NS_RS}}}RegistryResponse")
        assert found is not None, outcome[:500]
        answered, errors = parse_registry_response(found)
        assert answered == v.RESPONSE_FAILURE
        assert [(e.code, e.location) for e in errors] == [(v.XDSRepositoryError, HOME)]
        assert "more than 5 parts" in errors[0].context
    else:
        assert status == 200 and isinstance(outcome, Exception)
    assert httpx.get(f"{gateway.url}/health", timeout=10).text == "ok\n"
