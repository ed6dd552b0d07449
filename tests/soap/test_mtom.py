"""MTOM/XOP multipart parsing (W3C XOP 1.0, RFC 2387): part orders, cids, chunking, spooling, errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from xds.metadata import vocabulary as v
from xds.soap import mtom
from xds.soap.envelope import SoapFault
from xds.soap.mtom import parse_message

ENV = (
    f'<env:Envelope xmlns:env="{v.NS_SOAP12}" xmlns:wsa="{v.NS_WSA}"><env:Header>'
    f"<wsa:Action>urn:a</wsa:Action></env:Header><env:Body>"
    f'<doc xmlns:xop="{v.NS_XOP}"><xop:Include href="cid:doc1%40example.org"/></doc>'
    f"</env:Body></env:Envelope>"
).encode()


def multipart(
    parts: list[tuple[dict[str, str], bytes]], boundary: str = "b0undary", closing: bool = True
) -> bytes:
    out = [b"preamble text\r\n"]
    for headers, body in parts:
        out.append(f"--{boundary}\r\n".encode())
        out.append("".join(f"{k}: {val}\r\n" for k, val in headers.items()).encode() + b"\r\n")
        out.append(body + b"\r\n")
    if closing:
        out.append(f"--{boundary}--\r\nepilogue".encode())
    return b"".join(out)


def ctype(start: str | None = "<root@example.org>", boundary: str = "b0undary") -> str:
    value = f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start-info="application/soap+xml"'
    if start is not None:
        value += f'; start="{start}"'
    return value


ROOT = (
    {"Content-Type": 'application/xop+xml; type="application/soap+xml"', "Content-ID": "<root@example.org>"},
    ENV,
)
DOC = b"%PDF-1.7\r\n--b0undar not quite a boundary\r\n\x00\xff" * 50
ATT = ({"Content-Type": "application/pdf", "Content-ID": "<doc1@example.org>"}, DOC)


@pytest.mark.parametrize("order", ["root-first", "root-last"])
@pytest.mark.parametrize("start", ["<root@example.org>", "root@example.org"])
def test_parts_in_any_order_found_by_start_and_cid(order: str, start: str) -> None:
    parts = [ROOT, ATT] if order == "root-first" else [ATT, ROOT]
    request = parse_message(ctype(start), multipart(parts))
    assert request.action == "urn:a" and request.mtom
    att = mtom.resolve_xop(request.body, request.attachments)
    assert att is not None and att.read() == DOC
    assert att.sha1 == hashlib.sha1(DOC).hexdigest() and att.size == len(DOC)


def test_without_start_the_first_part_is_the_root() -> None:
    request = parse_message(ctype(None), multipart([ROOT, ATT]))
    assert mtom.resolve_xop(request.body, request.attachments).read() == DOC  # type: ignore[union-attr]


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_boundaries_split_across_reads(chunk: int, tmp_path: Path) -> None:
    data = multipart([ROOT, ATT])
    parser = mtom.MultipartParser(ctype(), spool_threshold=100, tmp_dir=str(tmp_path))
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
    root, attachments = parser.close()
    assert root == ENV
    att = attachments["doc1@example.org"]
    assert att.path is not None and att.path.startswith(str(tmp_path))  # spooled past the threshold
    assert att.read() == DOC and att.sha1 == hashlib.sha1(DOC).hexdigest()
    att.discard()
    assert os.listdir(tmp_path) == []


def test_truncated_message_is_refused_and_leaves_no_files(tmp_path: Path) -> None:
    data = multipart([ROOT, ATT], closing=False)[:-100]
    parser = mtom.MultipartParser(ctype(), spool_threshold=10, tmp_dir=str(tmp_path))
    parser.feed(data)
    with pytest.raises(SoapFault, match="truncated"):
        parser.close()
    assert os.listdir(tmp_path) == []


def test_missing_start_part_is_refused() -> None:
    with pytest.raises(SoapFault, match="start part"):
        parse_message(ctype("<other@example.org>"), multipart([ROOT, ATT]))


def test_wrong_cid_is_refused() -> None:
    other = ({"Content-Type": "application/pdf", "Content-ID": "<doc2@example.org>"}, DOC)
    request = parse_message(ctype(), multipart([ROOT, other]))
    with pytest.raises(SoapFault, match="not a part"):
        mtom.resolve_xop(request.body, request.attachments)


def test_no_boundary_parameter_is_refused() -> None:
    with pytest.raises(SoapFault, match="boundary"):
        mtom.MultipartParser("multipart/related; type=application/xop+xml")


def test_garbage_is_refused() -> None:
    parser = mtom.MultipartParser(ctype())
    with pytest.raises(SoapFault):
        parser.feed(b"x" * (mtom.MAX_HEADER_BYTES + 10))


def test_inline_base64_and_bad_base64() -> None:
    from lxml import etree

    el = etree.fromstring(b"<Document>aGVs\nbG8=</Document>")
    assert mtom.inline_or_xop_bytes(el, {}).read() == b"hello"
    with pytest.raises(SoapFault, match="base64"):
        mtom.inline_or_xop_bytes(etree.fromstring(b"<Document>!!</Document>"), {})


def test_built_request_parses_back() -> None:
    body = f'<doc xmlns:xop="{v.NS_XOP}"><xop:Include href="cid:a1"/></doc>'.encode()
    data, content_type = mtom.build_mtom_request("urn:x", body, [("a1", "text/plain", b"payload")])
    request = parse_message(content_type, data)
    assert request.action == "urn:x"
    assert mtom.resolve_xop(request.body, request.attachments).read() == b"payload"  # type: ignore[union-attr]


def test_normalize_cid() -> None:
    assert mtom.normalize_cid("cid:doc1%40example.org") == "doc1@example.org"
    assert mtom.normalize_cid("<doc1@example.org>") == "doc1@example.org"
    assert mtom.normalize_cid(" doc1@example.org ") == "doc1@example.org"


@pytest.mark.parametrize(
    ("header", "media", "params"),
    [
        (
            'application/soap+xml; charset=UTF-8; action="urn:ihe:iti:2007:RegistryStoredQuery"',
            "application/soap+xml",
            {"charset": "UTF-8", "action": "urn:ihe:iti:2007:RegistryStoredQuery"},
        ),
        # SOAP stacks that leave the action unquoted
        (
            "application/soap+xml;action=urn:a:b;charset=utf-8",
            "application/soap+xml",
            {"action": "urn:a:b", "charset": "utf-8"},
        ),
        (
            'Multipart/Related; boundary="----=_Part_0"; start="<r@x>"; start-info="application/soap+xml; action=\\"urn:x\\""',
            "multipart/related",
            {
                "boundary": "----=_Part_0",
                "start": "<r@x>",
                "start-info": 'application/soap+xml; action="urn:x"',
            },
        ),
        ('a/b; X = "1" ; y; x=2', "a/b", {"x": "2"}),  # names fold case, the last wins, no "=" is skipped
        ("garbage; boundary=x", "text/plain", {"boundary": "x"}),  # RFC 2045 §5.2 default type
        ("", "text/plain", {}),
    ],
)
def test_content_type_params(header: str, media: str, params: dict[str, str]) -> None:
    assert mtom.content_type_params(header) == (media, params)


def test_content_type_params_read_hostile_headers_in_linear_time() -> None:
    """Long runs that made an earlier pattern backtrack quadratically (a 64 KB header: 27 s)."""
    n = 64 * 1024
    assert mtom.content_type_params("a/b; x=y" + " " * n + "z; q=1") == (
        "a/b",
        {"x": "y" + " " * n + "z", "q": "1"},
    )
    assert mtom.content_type_params('a/b; x="' + "a" * n)[1] == {"x": "a" * n}
    assert mtom.content_type_params("a/b" + ';x="a' * (n // 5))[1]["x"].startswith("a")


def test_two_parts_with_one_content_id_are_refused_and_leave_no_files(tmp_path: Path) -> None:
    """One of them would be dropped unseen, and a spooled one left on disk for good."""
    for twin in (ATT, ({"Content-Type": "application/pdf"}, DOC)):
        parser = mtom.MultipartParser(ctype(), spool_threshold=10, tmp_dir=str(tmp_path))
        parser.feed(multipart([ROOT, twin, twin]))
        with pytest.raises(SoapFault, match="two parts"):
            parser.close()
        assert os.listdir(tmp_path) == []


def test_the_number_of_parts_is_bounded() -> None:
    empty = ({}, b"")
    parser = mtom.MultipartParser(ctype(start=None), max_parts=50)
    with pytest.raises(SoapFault, match="more than 50 parts"):
        parser.feed(multipart([ROOT] + [empty] * 60))
    parser = mtom.MultipartParser(ctype(start=None), max_parts=50)
    parser.feed(multipart([ROOT] + [({"Content-ID": f"<p{i}@example.org>"}, b"") for i in range(49)]))
    assert len(parser.close()[1]) == 49


@pytest.mark.parametrize("start", ["<root@example.org>", None])
def test_an_oversized_envelope_is_refused_while_it_streams(tmp_path: Path, start: str | None) -> None:
    """The root part is the SOAP envelope: refused as soon as it passes the limit, not after the
    whole of it has been read into memory."""
    big_root = (ROOT[0], ENV + b" " * 5000)
    parts = [ATT, big_root] if start else [big_root, ATT]
    parser = mtom.MultipartParser(
        ctype(start), spool_threshold=100, tmp_dir=str(tmp_path), max_root_bytes=len(ENV) + 1000
    )
    data = multipart(parts)
    with pytest.raises(SoapFault, match="larger than the limit"):
        for i in range(0, len(data), 512):
            parser.feed(data[i : i + 512])
    parser.discard()
    assert os.listdir(tmp_path) == []
    # an attachment may be as large as it likes
    parser = mtom.MultipartParser(ctype(), max_root_bytes=len(ENV) + 10)
    parser.feed(multipart([ROOT, ({"Content-ID": "<doc1@example.org>"}, DOC * 100)]))
    parser.close()


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "x-evil"])
def test_encoded_parts_are_refused(encoding: str) -> None:
    """A part's octets are the document's (XOP 1.0 §3): an encoded part would be stored, hashed
    and measured as its encoded text."""
    encoded = ({**ATT[0], "Content-Transfer-Encoding": encoding}, DOC)
    with pytest.raises(SoapFault, match="Content-Transfer-Encoding"):
        parse_message(ctype(), multipart([ROOT, encoded]))
    plain = ({**ATT[0], "Content-Transfer-Encoding": "binary"}, DOC)
    assert parse_message(ctype(), multipart([ROOT, plain])).attachments


@pytest.mark.parametrize("chunk", [1, 13, 4096])
def test_piped_parts_are_queued_as_they_arrive_and_spilled_when_not_read(chunk: int, tmp_path: Path) -> None:
    other = ({"Content-ID": "<doc2@example.org>"}, b"second" * 1000)
    data = multipart([ROOT, ATT, other])
    parser = mtom.MultipartParser(ctype(), spool_threshold=100, tmp_dir=str(tmp_path), pipe=True)
    relayed = b""
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
        if parser.root() is not None:
            assert parser.root() == ENV
        first = parser.piped.get("doc1@example.org")
        if first is not None:
            relayed += first.take()
        second = parser.piped.get("doc2@example.org")
        if second is not None:
            second.spill()  # nobody reads it as it comes: stored like any part
    assert parser.done and relayed == DOC
    assert set(parser.piped) == {"doc1@example.org", "doc2@example.org"}
    stored = parser.piped["doc2@example.org"].stored
    assert stored is not None and stored.path is not None and stored.read() == other[1]
    parser.discard()
    assert not list(tmp_path.iterdir())


def test_piped_parts_with_one_content_id_are_refused() -> None:
    parser = mtom.MultipartParser(ctype(), pipe=True)
    with pytest.raises(SoapFault, match="two parts"):
        parser.feed(multipart([ROOT, ATT, ATT]))


@pytest.mark.parametrize("pipe", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_large_pieces_skip_the_buffer_and_give_the_same_parts(pipe: bool, seed: int, tmp_path: Path) -> None:
    """Pieces of 8 kB and more in the middle of a part go to it without the parser's buffer; parts
    full of near-boundaries, CRs and a boundary split at every place across two pieces come out
    exactly as from one whole read."""
    import random

    rng = random.Random(seed)
    noise = [b"\r", b"\r\n", b"\r\n-", b"\r\n--b0undar", b"\r\n--b0undarx", b"--b0undary", os.urandom(300)]
    docs = [b"".join(rng.choice(noise) for _ in range(rng.randrange(50, 400))) for _ in range(3)]
    docs = [doc.replace(b"\r\n--b0undary", b"\r\n--b0undarX") for doc in docs]  # no real boundary
    parts = [ROOT] + [({"Content-ID": f"<d{i}@example.org>"}, doc) for i, doc in enumerate(docs)]
    data = multipart(parts)
    parser = mtom.MultipartParser(ctype(), spool_threshold=10_000, tmp_dir=str(tmp_path), pipe=pipe)
    relayed: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        size = rng.choice([1, 50, 8 * 1024, 9000, 20_000, 70_000])
        parser.feed(data[at : at + size])
        at += size
        for cid, part in parser.piped.items():
            relayed[cid] = relayed.get(cid, b"") + part.take()
    root, attachments = parser.close()
    assert root == ENV
    for i, doc in enumerate(docs):
        cid = f"d{i}@example.org"
        assert (relayed[cid] if pipe else attachments[cid].read()) == doc
    parser.discard()
    for att in attachments.values():
        att.discard()


@pytest.mark.parametrize("pipe", [False, True])
def test_a_boundary_split_at_the_end_of_a_large_piece_is_found(pipe: bool) -> None:
    """A large piece (fed past the parser's buffer) that ends anywhere inside a boundary, or in a
    near-boundary of the document, keeps those bytes back until the next piece says what they are."""
    import random

    rng = random.Random(3)
    doc = bytes(rng.randrange(256) for _ in range(12_000)).replace(b"\r", b"\n") + b"\r\n--b0undarX\r"
    data = multipart([ROOT, ({"Content-ID": "<d@example.org>"}, doc)])
    delim = data.index(b"\r\n--b0undary", data.index(doc))
    for k in range(delim - 16, delim + len(b"\r\n--b0undary") + 3):
        parser = mtom.MultipartParser(ctype(), pipe=pipe)
        at = 0
        while at < k - 9000:  # small pieces: into the document's body
            parser.feed(data[at : at + 1000])
            at += 1000
        parser.feed(data[at:k])  # one large piece, ending at k
        parser.feed(data[k:])
        root, attachments = parser.close()
        got = parser.piped["d@example.org"].take() if pipe else attachments["d@example.org"].read()
        assert got == doc, k
