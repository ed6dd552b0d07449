"""ITI-41, ITI-43 and ITI-86 over real HTTP against ``xds serve``'s default repository.

A zeep client built from the official repository WSDL provides (inline base64) and retrieves (MTOM);
raw MTOM messages written here probe part orders, cids, missing parts, truncation and mismatches.
Every RegistryResponse is validated against the ebRS 3.0 schema, every retrieve answer against
XDS.b_DocumentRepository.xsd.
"""

from __future__ import annotations

import base64
import hashlib
import random
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
from lxml import etree
from sqlalchemy import func, select
from support import zeep_send

from xds import safexml, samples
from xds.client import RepositoryClient, describe_files
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response
from xds.registry import schema as t
from xds.repository.schema import repository_documents as rd
from xds.soap.envelope import NS_WSSE, envelope_bytes
from xds.soap.mtom import multipart_content_type, parse_message

X = f"{{{v.NS_XDSB}}}"


@pytest.fixture(scope="module")
def repo_schema(standards: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(standards / "iti/schema/IHE/XDS.b_DocumentRepository.xsd")))


@pytest.fixture(scope="module")
def rs_schema(standards: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(standards / "iti/schema/ebRS/rs.xsd")))


def repo_of(server):  # type: ignore[no-untyped-def]
    return server.app.state.repositories["default"]


def pnr_body(sub, documents: dict[str, str]) -> bytes:  # type: ignore[no-untyped-def]
    """A ProvideAndRegisterDocumentSetRequest whose Documents are given as ready XML content."""
    docs = "".join(
        f'<xdsb:Document id="{doc_id}">{content}</xdsb:Document>' for doc_id, content in documents.items()
    )
    return (
        f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
        + ebrim.submit_objects_request_bytes(sub)
        + docs.encode()
        + b"</xdsb:ProvideAndRegisterDocumentSetRequest>"
    )


def xop(cid: str) -> str:
    return f'<xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cid}"/>'


def mtom_message(
    envelope: bytes, parts: list[tuple[str, bytes]], *, root_last: bool = False, brackets: bool = True
):  # type: ignore[no-untyped-def]
    boundary = f"b-{uuid.uuid4().hex}"
    root_id = "root@test"
    root = (
        (
            f'--{boundary}\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\n'
            f"Content-ID: <{root_id}>\r\n\r\n"
        ).encode()
        + envelope
        + b"\r\n"
    )
    others = b"".join(
        (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-ID: {'<' + cid + '>' if brackets else cid}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
        for cid, data in parts
    )
    body = (others + root if root_last else root + others) + f"--{boundary}--\r\n".encode()
    return body, multipart_content_type(boundary, root_id, v.ACTION_PROVIDE_AND_REGISTER)


def post_mtom(url: str, body: bytes, ctype: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": ctype}, timeout=60)


def answer(response: httpx.Response):  # type: ignore[no-untyped-def]
    message = parse_message(response.headers["content-type"], response.content)
    return message


def status_and_codes(response: httpx.Response, rs_schema: etree.XMLSchema) -> tuple[str, list[str]]:
    body = answer(response).body
    rs_schema.assertValid(body)
    status, errors = parse_registry_response(body)
    return status.rsplit(":", 1)[-1], [e.code for e in errors]


def stored_counts(server) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    repo = repo_of(server)
    with repo.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(rd)).scalar_one()
        docs = conn.execute(select(func.count()).select_from(t.documents)).scalar_one()
    return rows, docs, len(list(repo.store.all_blobs()))


def sample(n: int = 1):  # type: ignore[no-untyped-def]
    s = samples.submission(rng=random.Random(), documents=n)
    for d in s.documents:
        d.slots = [x for x in d.slots if x.name not in ("hash", "size", "repositoryUniqueId")]
    return s


# --- zeep from the official WSDL -------------------------------------------------------------------
def test_zeep_provides_and_retrieves(server, standards: Path, repo_schema, rs_schema) -> None:  # type: ignore[no-untyped-def]
    import zeep

    client = zeep.Client(str(standards / "iti/wsdl/XDS.b_DocumentRepository.wsdl"))
    url = f"{server.url}/repository"
    service = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRepository_Binding", url)
    s = sample()
    # zeep strips CR and LF from both ends of every "Content-Transfer-Encoding: binary" part it
    # reads (zeep.wsdl.attachments.Attachment.content), so a document ending in a line end comes
    # out one byte short: the random bytes end with a fixed one. (Our answer carries the bytes as
    # they are: test_client_round_trip_several_documents and the raw-MTOM tests read them.)
    content = b"%PDF-1.4 radiologisvar " + uuid.uuid4().bytes + b"%%EOF"
    body = etree.fromstring(pnr_body(s.submission, {"Document01": base64.b64encode(content).decode()}))
    response, result = zeep_send(
        client,
        service,
        "DocumentRepository_ProvideAndRegisterDocumentSet-b",
        body,
        SubmitObjectsRequest={"RegistryObjectList": {"Identifiable": []}},
        Document=[{"_value_1": b"", "id": "placeholder"}],
    )
    assert response.status_code == 200, response.text
    assert result.status == v.RESPONSE_SUCCESS, result

    repo = repo_of(server)
    uid = s.documents[0].unique_id
    result = service["DocumentRepository_RetrieveDocumentSet"](
        DocumentRequest=[{"RepositoryUniqueId": repo.unique_id, "DocumentUniqueId": uid}]
    )
    assert result.RegistryResponse.status == v.RESPONSE_SUCCESS
    [doc] = result.DocumentResponse
    assert doc.DocumentUniqueId == uid and doc.mimeType == s.documents[0].mime_type
    assert doc.Document == content

    # the registry got hash, size and repositoryUniqueId from the repository
    with repo.engine.connect() as conn:
        row = conn.execute(
            select(t.documents.c.hash, t.documents.c.size, t.documents.c.repository_unique_id)
        ).one()
    assert row == (hashlib.sha1(content).hexdigest(), len(content), repo.unique_id)


# --- the project's own client: MTOM both ways ------------------------------------------------------
def test_client_round_trip_several_documents(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = []
    for i, data in enumerate(
        [
            b"%PDF-1.7 " + bytes(range(256)) * 400,
            b"plain text",
            b"\x00" * 128 + b"DICM" + b"x" * 99,
            b"\r\n<ClinicalDocument/>\r\n\n",  # line ends at both ends are the document's
        ]
    ):
        f = tmp_path / f"f{i}.{['pdf', 'txt', 'dcm', 'xml'][i]}"
        f.write_bytes(data)
        files.append(f)
    sub, documents = describe_files(files, samples.patient_cx("13116900216"))
    url = f"{server.url}/repository/default"
    with RepositoryClient(url) as client:
        outcome = client.provide_and_register(sub, documents)
        assert outcome.ok, outcome.errors
        uids = [d.unique_id for d in sub.documents]
        repo = repo_of(server)
        got, found = client.retrieve(repo.unique_id, [*uids, "1.2.3.404"], tmp_path / "out")
    assert got.status == v.RESPONSE_PARTIAL_SUCCESS
    assert [e.code for e in got.errors] == [v.XDSDocumentUniqueIdError]
    assert [f.mime_type for f in found] == [
        "application/pdf",
        "text/plain",
        "application/dicom",
        "application/xml",
    ]
    for f, original in zip(found, files, strict=True):
        assert f.path.read_bytes() == original.read_bytes()
    with RepositoryClient(url) as client:
        assert client.remove(repo.unique_id, uids[:1]).ok
        gone, none = client.retrieve(repo.unique_id, uids[:1], tmp_path / "gone")
    assert not none and [e.code for e in gone.errors] == [v.XDSDocumentUniqueIdError]


@pytest.mark.parametrize("root_last", [False, True])
@pytest.mark.parametrize("brackets", [True, False])
def test_mtom_part_order_and_cid_forms(server, rs_schema, root_last: bool, brackets: bool) -> None:  # type: ignore[no-untyped-def]
    s = sample(2)
    d1, d2 = b"first document", b"second document" * 100
    env = envelope_bytes(
        v.ACTION_PROVIDE_AND_REGISTER,
        pnr_body(s.submission, {"Document01": xop("one@x"), "Document02": xop("two%40x")}),
    )
    body, ctype = mtom_message(env, [("two@x", d2), ("one@x", d1)], root_last=root_last, brackets=brackets)
    response = post_mtom(f"{server.url}/repository", body, ctype)
    assert status_and_codes(response, rs_schema) == ("Success", [])
    assert response.headers["content-type"].startswith("multipart/related")  # MTOM answered with MTOM


def test_missing_part_and_missing_metadata(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    s = sample()
    env = envelope_bytes(
        v.ACTION_PROVIDE_AND_REGISTER,
        pnr_body(
            s.submission, {"Document01": xop("nowhere@x"), "Document99": base64.b64encode(b"x").decode()}
        ),
    )
    body, ctype = mtom_message(env, [("other@x", b"data")])
    status, codes = status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema)
    assert status == "Failure"
    assert v.XDSMissingDocument in codes and v.XDSMissingDocumentMetadata in codes
    assert stored_counts(server) == (0, 0, 0)


def test_metadata_without_document(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    s = sample(2)
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", b"one")])
    status, codes = status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema)
    assert (status, codes) == ("Failure", [v.XDSMissingDocument])
    assert stored_counts(server) == (0, 0, 0)


def test_supplied_hash_and_size_must_match(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    s = sample()
    s.documents[0].set_slot("hash", ["0" * 40])
    s.documents[0].set_slot("size", ["999"])
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", b"one")])
    status, codes = status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema)
    assert (status, codes) == ("Failure", [v.XDSRepositoryMetadataError, v.XDSRepositoryMetadataError])


def test_registry_refusal_is_passed_back_and_nothing_stays(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    s = sample()
    s.documents[0].set_slot("creationTime", ["20261399"])  # the registry's validation refuses this
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", b"bytes that must not stay" * 1000)])
    status, codes = status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema)
    assert (status, codes) == ("Failure", [v.XDSRegistryMetadataError])
    assert stored_counts(server) == (0, 0, 0)
    assert list(repo_of(server).store.tmp.iterdir()) == []


def provide_one(server, s, data: bytes, rs_schema) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", data)])
    return status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema)


def test_resubmission_and_other_bytes_under_a_stored_unique_id(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    patient = samples.patient_cx("13116900216")

    def fresh():  # type: ignore[no-untyped-def]
        s = samples.submission(patient, rng=random.Random())
        d = s.documents[0]
        d.slots = [x for x in d.slots if x.name not in ("hash", "size", "repositoryUniqueId")]
        return s

    first = fresh()
    uid = first.documents[0].unique_id or ""
    data = b"%PDF-1.7 epikrise " + uuid.uuid4().bytes
    assert provide_one(server, first, data, rs_schema) == ("Success", [])

    def again():  # type: ignore[no-untyped-def]
        s = fresh()
        s.documents[0].set_external_id(v.DE_UNIQUE_ID, uid)
        return s

    # the same bytes again under the same uniqueId: accepted, still one row and one blob
    assert provide_one(server, again(), data, rs_schema) == ("Success", [])
    rows, _, blobs = stored_counts(server)
    assert (rows, blobs) == (1, 1)
    # other bytes under it: refused, and neither a row nor the refused bytes stay
    assert provide_one(server, again(), data + b"changed", rs_schema) == ("Failure", [v.XDSNonIdenticalHash])
    assert stored_counts(server)[0::2] == (1, 1)
    # a refused submission whose bytes equal a stored document's leaves that document's blob alone
    other = sample()
    other.documents[0].set_slot("creationTime", ["20261399"])
    assert provide_one(server, other, data, rs_schema) == ("Failure", [v.XDSRegistryMetadataError])
    assert stored_counts(server)[0::2] == (1, 1)
    with RepositoryClient(f"{server.url}/repository") as client:
        got, found = client.retrieve(repo_of(server).unique_id, [uid], Path(tempfile.mkdtemp()))
    assert got.ok and found[0].path.read_bytes() == data


def test_truncated_body_is_a_fault_and_server_keeps_serving(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    s = sample()
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", b"z" * 500_000)])
    response = post_mtom(f"{server.url}/repository", body[: len(body) // 2], ctype)
    assert response.status_code == 400 and b"truncated" in response.content
    assert stored_counts(server) == (0, 0, 0)
    assert list(repo_of(server).store.tmp.iterdir()) == []
    body, ctype = mtom_message(env, [("one@x", b"z" * 500_000)])
    assert status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema) == ("Success", [])


def test_retrieve_errors_and_schema(server, repo_schema, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = sample()
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", b"one")])
    post_mtom(f"{server.url}/repository", body, ctype)
    repo = repo_of(server)
    requests = "".join(
        f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{r}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{u}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        for r, u in [
            (repo.unique_id, s.documents[0].unique_id),
            ("1.2.3.4", "1.2.3"),
            (repo.unique_id, "9.9"),
        ]
    )
    data = envelope_bytes(
        v.ACTION_RETRIEVE,
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">{requests}</xdsb:RetrieveDocumentSetRequest>'.encode(),
    )
    response = httpx.post(
        f"{server.url}/repository", content=data, headers={"Content-Type": "application/soap+xml"}, timeout=30
    )
    message = answer(response)
    # the schema sees the document as base64: put the bytes back inline before validating
    for doc in message.body.iter(X + "Document"):
        include = doc[0]
        att = message.attachments[include.get("href")[4:]]
        doc.remove(include)
        doc.text = base64.b64encode(att.read()).decode()
    repo_schema.assertValid(message.body)
    status, errors = parse_registry_response(message.body.find(f"{{{v.NS_RS}}}RegistryResponse"))
    assert status == v.RESPONSE_PARTIAL_SUCCESS
    assert sorted(e.code for e in errors) == [v.XDSDocumentUniqueIdError, v.XDSUnknownRepositoryId]


def test_remove_documents(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    s = sample()
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    body, ctype = mtom_message(env, [("one@x", b"to be removed")])
    post_mtom(f"{server.url}/repository", body, ctype)
    repo = repo_of(server)
    req = (
        f'<rmd:RemoveDocumentsRequest xmlns:rmd="{v.NS_RMD}" xmlns:xdsb="{v.NS_XDSB}">'
        f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repo.unique_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{s.documents[0].unique_id}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repo.unique_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>1.2.3.404</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        f"</rmd:RemoveDocumentsRequest>"
    )
    data = envelope_bytes(v.ACTION_REMOVE_DOCUMENTS, req.encode())
    response = httpx.post(
        f"{server.url}/repository", content=data, headers={"Content-Type": "application/soap+xml"}, timeout=30
    )
    assert status_and_codes(response, rs_schema) == ("PartialSuccess", [v.XDSDocumentUniqueIdError])
    rows, _, blobs = stored_counts(server)
    assert (rows, blobs) == (0, 0)


def test_wsdl_is_served(server) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/repository/default?wsdl", timeout=10)
    root = safexml.parse(response.content)
    assert f"{server.url}/repository/default" in response.text
    assert root.tag == "{http://schemas.xmlsoap.org/wsdl/}definitions"


def test_refused_envelopes_and_duplicate_parts_leave_no_spooled_files(server, rs_schema) -> None:  # type: ignore[no-untyped-def]
    """Parts spooled to disk while the message streamed in are removed whatever refuses it: an
    envelope that is not XML, an unknown action, two parts with one Content-ID."""
    big = b"z" * 400_000  # past the spool threshold
    tmp = repo_of(server).store.tmp
    bad_envelope, ctype = mtom_message(b"this is not XML", [("one@x", big)])
    s = sample()
    env = envelope_bytes("urn:example:NoSuchAction", pnr_body(s.submission, {"Document01": xop("one@x")}))
    unknown_action, ctype2 = mtom_message(env, [("one@x", big)])
    env = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, pnr_body(s.submission, {"Document01": xop("one@x")}))
    twins, ctype3 = mtom_message(env, [("one@x", big), ("one@x", big + b"!")])
    for body, content_type in ((bad_envelope, ctype), (unknown_action, ctype2), (twins, ctype3)):
        response = post_mtom(
            f"{server.url}/repository", body, content_type.replace(v.ACTION_PROVIDE_AND_REGISTER, "")
        )
        assert response.status_code == 400 and b"Fault" in response.content
        assert list(tmp.iterdir()) == []
    assert stored_counts(server) == (0, 0, 0)


def test_two_documents_of_the_same_spooled_part_are_both_stored(server, rs_schema, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = sample(2)
    same = b"the same bytes twice " * 20_000
    env = envelope_bytes(
        v.ACTION_PROVIDE_AND_REGISTER,
        pnr_body(s.submission, {"Document01": xop("one@x"), "Document02": xop("one@x")}),
    )
    body, ctype = mtom_message(env, [("one@x", same)])
    assert status_and_codes(post_mtom(f"{server.url}/repository", body, ctype), rs_schema) == ("Success", [])
    assert stored_counts(server) == (2, 2, 1)
    with RepositoryClient(f"{server.url}/repository") as client:
        outcome, found = client.retrieve(
            repo_of(server).unique_id, [d.unique_id for d in s.documents], tmp_path
        )
    assert outcome.ok and [f.path.read_bytes() == same for f in found] == [True, True]


def test_header_blocks_that_must_be_understood_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    """SOAP 1.2 Part 1 §5.4.8: a mandatory header block this endpoint does not process (here a
    WS-Security header to a repository without the trust model) is a MustUnderstand fault,
    never silently ignored."""
    security = f'<wsse:Security xmlns:wsse="{NS_WSSE}" xmlns:env="{v.NS_SOAP12}" env:mustUnderstand="true"/>'
    env = envelope_bytes(
        v.ACTION_RETRIEVE,
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"/>'.encode(),
        extra_headers=[security.encode()],
    )
    response = httpx.post(
        f"{server.url}/repository", content=env, headers={"Content-Type": "application/soap+xml"}, timeout=30
    )
    assert response.status_code == 500 and b"MustUnderstand" in response.content  # SOAP 1.2 Part 2 §7.5.2.2
