"""The audit message written as text is byte for byte what lxml writes from its element tree
(DICOM PS3.15 A.5.1), hostile characters included, and validates against the DICOM schema."""

from __future__ import annotations

import random
from pathlib import Path

from lxml import etree

from xds.audit import message as m
from xds.audit.observer import EndpointAuditor

ALPHABET = "ab <>&\"'\t\n\r\x01\x0b å€\ufffe  x"


def _messages(count: int) -> list[m.AuditMessage]:
    rng = random.Random(3)

    def s() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))

    def code() -> m.Code:
        return m.Code(s(), s(), s())

    out = []
    for _ in range(count):
        participants = [
            m.ActiveParticipant(
                s(),
                rng.random() < 0.5,
                [code()] if rng.random() < 0.5 else [],
                s(),
                s(),
                s(),
                rng.choice("12"),
            )
            for _ in range(3)
        ]
        objects = [
            m.ParticipantObject(
                s(), code(), "2", "24", s(), s().encode() if rng.random() < 0.5 else b"", [(s(), s())], s()
            )
            for _ in range(2)
        ]
        out.append(
            m.AuditMessage(
                event_id=code(),
                action=rng.choice("CRUDE"),
                outcome="0",
                type_codes=[code()],
                outcome_description=s(),
                purpose_of_use=[code()] if rng.random() < 0.5 else [],
                participants=participants,
                source=m.AuditSource(s(), s(), rng.choice(["", "4"])),
                objects=objects,
            )
        )
    return out


def test_text_is_what_lxml_writes() -> None:
    for msg in _messages(500):
        assert msg.xml() == etree.tostring(msg.element(), encoding="utf-8")


def test_text_of_a_plain_message_validates(audit_schema: etree.RelaxNG) -> None:
    msg = m.AuditMessage(
        event_id=m.Code("110112", "DCM", "Query"),
        action="E",
        outcome=m.SUCCESS,
        type_codes=[m.Code("ITI-18", "IHE Transactions", "Registry Stored Query")],
        participants=[m.ActiveParticipant("a & b <c>", True, [m.ROLE_SOURCE], network_id="127.0.0.1")],
        source=m.AuditSource("xds", "site"),
        objects=[
            m.ParticipantObject("p\t1", m.PATIENT_NUMBER, m.PERSON, m.ROLE_PATIENT, details=[("k", "v")])
        ],
    )
    assert audit_schema.validate(etree.fromstring(msg.xml())), audit_schema.error_log


def test_the_spooled_form_gives_back_the_same_message() -> None:
    from xds.audit.requester import Requester
    from xds.audit.trail import Record, spooled

    who = Requester("Kari <Lege>", "123", "LE", "Sykehus & co", "983971636", "TREAT", "p^^^&1&ISO", "idp")
    for msg in _messages(200):
        got = Record.from_bytes(spooled(msg, who))
        assert got == Record.of(msg, who)
        assert got.summary["btg"] is False and got.summary["hpr"] == "123"
    assert Record.from_bytes(spooled(msg, None)) == Record.of(msg)


def test_a_record_spooled_whole_by_an_earlier_version_is_still_read() -> None:
    from xds.audit.trail import Record

    msg = _messages(1)[0]
    assert Record.from_bytes(Record.of(msg).to_bytes()) == Record.of(msg)


def test_a_captured_exchange_gives_the_message_the_request_path_would_have_built() -> None:
    """Queries and registrations are spooled as the envelope received plus a small head; the
    delivery side builds their message from that, the same as one built from the live exchange."""
    from xds.audit import capture, events
    from xds.audit.requester import Requester
    from xds.audit.trail import Record
    from xds.audit.transactions import by_action
    from xds.bench.register import register_messages
    from xds.metadata import vocabulary as v
    from xds.soap.envelope import build_request, parse_envelope

    query = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="LeafClass"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}" home="urn:oid:1.2">'
        '<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>\'13116900216^^^&amp;'
        "2.16.578.1.12.4.1.4.1&amp;ISO'</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery>"
        "</query:AdhocQueryRequest>"
    ).encode()
    who = Requester('Kari "Lege" <Ærø> \\ 𝄞', "123", "LE", "Sykehus & co\tavd", "983971636", "BTG", "", "idp")
    source = m.AuditSource("xds@test", "983971636")
    cases = [
        (build_request(v.ACTION_STORED_QUERY, query)[0], "Success", "", False),
        (register_messages(1, seed=5)[0], "Failure", "", False),
        (build_request(v.ACTION_STORED_QUERY, query)[0], "", "refused: no assertion", True),
    ]
    for data, status, fault, refused in cases:
        request = parse_envelope(data, request=True)
        tx = by_action(request.action)
        assert tx is not None
        entry = capture.capture(tx, request, status, fault, refused, who, ("10.0.0.7", "http://x/r"), source)
        assert entry is not None and entry.startswith(capture.MARK)
        got, requester = capture.rebuild(entry, "1234-abcd-000001.seg:4096")
        live = events.Exchange(
            action=request.action,
            request=request.body,
            fault=fault,
            refused=refused,
            security=who,
            client="10.0.0.7",
            server="http://x/r",
            status=status,
        )
        (expected,) = events.responder_events(live, source)
        expected.when, expected.event_uuid = got.when, got.event_uuid
        assert got.text() == expected.text()
        assert Record.from_bytes(entry, "1234-abcd-000001.seg:4096") == Record.of(expected, who)
        assert requester == who
        # the event id comes from where the entry sits in the spool: the same on every reading
        assert capture.rebuild(entry, "1234-abcd-000001.seg:4096")[0].event_uuid == got.event_uuid
        assert capture.rebuild(entry, "1234-abcd-000001.seg:8192")[0].event_uuid != got.event_uuid
    # a payload that is not part of the envelope (or an MTOM message) is built on the request path
    request = parse_envelope(cases[0][0], request=True)
    request.body = etree.fromstring(query)
    assert capture.capture(by_action(request.action), request, "", "", False, who, ("", ""), source) is None  # type: ignore[arg-type]
    # no one named (an unsigned request): read back as no one
    request = parse_envelope(cases[0][0], request=True)
    tx = by_action(request.action)
    assert tx is not None
    entry = capture.capture(tx, request, "Success", "", False, Requester(), ("", "http://x/r"), source)
    assert entry is not None and capture.rebuild(entry)[1] == Requester()


def test_an_unsigned_query_is_spooled_as_the_general_path_would_spool_it() -> None:
    """The endpoint's short way for an unsigned query without a fault (a ``Q`` entry: its line made
    once per endpoint, action and client, the status read from the answer's bytes) holds what the
    entry :func:`capture.capture` writes holds, but for its time, and both give the same audit
    message, whatever status the answer carries (or none)."""
    import json

    from xds.audit import capture, events
    from xds.audit.requester import Requester
    from xds.audit.transactions import by_action
    from xds.metadata import vocabulary as v
    from xds.soap.envelope import build_request, parse_envelope

    query = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        '<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>'
        "<rim:Value>'12345678901^^^&amp;2.16.578.1.12.4.1.4.1&amp;ISO'</rim:Value>"
        "</rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()
    request = parse_envelope(build_request(v.ACTION_STORED_QUERY, query)[0], request=True)
    tx = by_action(request.action)
    assert tx is not None
    source = m.AuditSource('xds@"v\u00e6rt"', "983971636")
    prefix = f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}"'
    status_of = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:"
    answers = [
        (f'{prefix} status="{status_of}{status}"/>' if status else f"{prefix}/>", status)
        for status in ("Success", "PartialSuccess", "Failure", "")
    ]
    pad = 8192 - len(f'{prefix} x="" status="{status_of}Success')  # the word ends where the search stops
    answers += [  # what the first look at the answer does not settle: found by the search, or not at all
        (
            f'{prefix} status="{status_of}Unknown"><x>{status_of}Failure</x></query:AdhocQueryResponse>',
            "Failure",
        ),
        (f'{prefix} status="{status_of}Successful"/>', "Success"),  # (the search's own reading)
        (f'{prefix} status="{status_of}S"/>', ""),
        (f'{prefix} status="{status_of}Partial"/>', ""),
        (f'{prefix} x="{" " * pad}" status="{status_of}Success"/>', "Success"),
        (f'{prefix} x="{" " * (pad + 1)}" status="{status_of}Success"/>', ""),  # past where the search looks
    ]
    for text, status in answers:
        answer = text.encode()
        assert events.response_status(answer) == status
        assert capture.STATUSES[capture.status_code(answer)] == status  # (the search alone)
        quick = capture.query_entry(
            request.action,
            "http://x/r",
            request.reply_to or "",
            "urn:oid:1.2",
            source,
            answer,
            "10.0.0.7",
            request.raw,
        )
        general = capture.capture(
            tx, request, status, "", False, Requester(), ("10.0.0.7", "http://x/r"), source, "urn:oid:1.2"
        )
        assert general is not None and quick[:1] == capture.QUERY
        assert capture.STATUSES[capture._QUERY_HEAD.unpack_from(quick)[2]] == status
        line, raw = quick[capture._QUERY_HEAD.size :].split(b"\n", 1)
        assert raw == request.raw and line.isascii()
        g = json.loads(general[1:].split(b"\n", 1)[0])
        action, _, g_status, fault, refused, who, client, server, reply_to, home, src, uid, pid, _ = g
        assert (fault, refused, who, uid) == ("", False, [""] * 8, "")
        assert json.loads(line) == [client, action, server, reply_to, home, src, pid]
        (built, by), (expected, _) = (capture.rebuild(e, "s.seg:0") for e in (quick, general))
        assert by == Requester() and abs(built.when.timestamp() - expected.when.timestamp()) < 1
        built.when = expected.when
        assert built.xml() == expected.xml()
        assert built.outcome == expected.outcome and built.patients() == [
            "12345678901^^^&2.16.578.1.12.4.1.4.1&ISO"
        ]


def test_an_unsigned_submission_is_spooled_as_the_general_path_would_spool_it() -> None:
    """A submission's short way takes the patient and the SubmissionSet the registry read while
    parsing it (the request's facts); the entry is the one :func:`capture.capture` writes from
    the request itself, but for its time, and both give the same message as the request path."""
    import json

    from xds.audit import capture, events
    from xds.audit.requester import Requester
    from xds.audit.transactions import by_action
    from xds.bench.register import register_messages
    from xds.metadata import ebrim
    from xds.soap.envelope import parse_envelope

    source = m.AuditSource("xds@host", "983971636")
    for raw in register_messages(20, seed=5):
        request = parse_envelope(raw, request=True)
        tx = by_action(request.action)
        assert tx is not None and tx.kind == "submission"
        general = capture.capture(
            tx, request, "Success", "", False, Requester(), ("10.0.0.7", "http://x/r"), source, ""
        )
        request.facts["submission"] = events.submission_ids(ebrim.parse_submit_objects_request(request.body))
        start, same = capture.pieces(request.action, "http://x/r", request.reply_to or "", "", source)
        answer = b'<rs:RegistryResponse status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>'
        quick = capture.submission_entry(start, same, answer, "10.0.0.7", request)
        assert general is not None
        q, g = (json.loads(e[1:].split(b"\n", 1)[0]) for e in (quick, general))
        assert q[1] != 0 and g[1] != 0
        q[1] = g[1] = 0  # the time
        assert q == g and quick.endswith(b"\n")
        (built, _), (expected, _) = (capture.rebuild(e, "s.seg:0") for e in (quick, general))
        built.when = expected.when
        assert built.xml() == expected.xml()
        assert len(built.patients()) == 1
        exchange = events.Exchange(action=request.action, request=request.body, status="Success")
        direct = events.responder_events(exchange, source)[0]
        assert [o.object_id for o in direct.objects] == [o.object_id for o in built.objects]


def test_the_submission_ids_the_registry_reads_are_those_read_from_the_request() -> None:
    from xds.audit import events
    from xds.bench.register import register_messages
    from xds.metadata import ebrim
    from xds.soap.envelope import parse_envelope

    for raw in register_messages(50, seed=9):
        body = parse_envelope(raw, request=True).body
        ids = events.submission_ids(ebrim.parse_submit_objects_request(body))
        assert all(ids)
        assert events.submission_objects_of(*ids) == events.submission_objects(body)


def test_a_submission_s_objects_from_the_handler_s_facts_are_their_wire_form() -> None:
    import json
    from types import SimpleNamespace

    from xds.audit import capture, events

    for ids in [("", "1.2.3"), ('p"1^^^&1.2&ISO', ""), ("", ""), ("12345678901^^^&2.16&ISO", "1.2.\u00e6")]:
        request = SimpleNamespace(facts={"submission": ids})
        got = json.loads(capture._objects(request, None))
        assert got == [m.object_wire(o) for o in events.submission_objects_of(*ids)]


def test_an_entry_s_time_is_read_in_nanoseconds_and_in_an_earlier_version_s_seconds() -> None:
    """A ``Q`` entry's time is in nanoseconds; a general entry's too, and as earlier versions wrote
    it: in seconds, or an unsigned query's payload named ``null`` (read as the endpoint reads it)."""
    import datetime as dt
    import time

    from xds.audit import capture
    from xds.metadata import vocabulary as v
    from xds.soap.envelope import build_request, parse_envelope

    query = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}"/>'
        "</query:AdhocQueryRequest>"
    ).encode()
    request = parse_envelope(build_request(v.ACTION_STORED_QUERY, query)[0], request=True)
    source = m.AuditSource("xds")
    before = time.time()
    entry = capture.query_entry(request.action, "http://x/r", "", "", source, b"", "10.0.0.7", request.raw)
    got, _ = capture.rebuild(entry)
    assert before - 0.001 <= got.when.timestamp() <= time.time() + 0.001
    # an earlier version's entry for the same query: a JSON head, its payload named null
    start, same = capture.pieces(request.action, "http://x/r", "", "", source)
    earlier = capture._entry(start, capture.answered(b""), "10.0.0.7", same, "null", request.raw)
    head, rest = earlier.split(b",", 1)
    stamp, tail = rest.split(b",", 1)
    assert stamp.isdigit()  # nanoseconds
    then, _ = capture.rebuild(earlier)
    then.when = got.when
    assert then.xml() == got.xml()
    earlier = head + b",1733400000.25," + tail  # an earlier version wrote seconds
    assert capture.rebuild(earlier)[0].when == dt.datetime(2024, 12, 5, 12, 0, 0, 250000, dt.UTC)


def _through_an_endpoint(
    tmp_path: Path, exchanges: list[tuple[str, bytes]]
) -> tuple[EndpointAuditor, list[tuple[int, bytes]]]:
    """The same unsigned FindDocuments through a real :class:`EndpointAuditor`, once for each
    (client address, answer): the auditor, and the spool entries it wrote (offset, bytes)."""
    from xds.audit.journal import Journal
    from xds.audit.trail import AuditTrail
    from xds.metadata import vocabulary as v
    from xds.soap.envelope import SoapResponse, build_request, parse_envelope

    query = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}"/>'
        "</query:AdhocQueryRequest>"
    ).encode()
    raw = build_request(v.ACTION_STORED_QUERY, query)[0]
    trail = AuditTrail(tmp_path / "spool", [])
    auditor = EndpointAuditor(trail, m.AuditSource("xds@test"))
    for client, answer in exchanges:
        request = parse_envelope(raw, request=True)
        request.raw = raw
        scope = {"type": "http", "path": "/registry", "server": ("127.0.0.1", 8080), "client": (client, 1)}
        auditor.exchanged(scope, request, SoapResponse(v.ACTION_STORED_QUERY_RESPONSE, answer), None, False)
    reader = Journal(tmp_path / "spool", ["database"], owner=trail.journal.name, write=False)
    try:
        (segment,) = reader.segments()
        entries, _ = segment.read("database", len(exchanges) + 1)
    finally:
        reader.close()
        trail.journal.close()
    return auditor, entries


def test_an_endpoint_s_queries_carry_each_answer_s_own_status(tmp_path: Path) -> None:
    """The endpoint keeps the opening of its last answer up to its status: an answer that starts
    the same way has that status; one that does not is read afresh (Success, Failure, Success
    again, an answer with no status, and one whose status is further in)."""
    from xds.audit import capture
    from xds.metadata import vocabulary as v

    opening = f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" status="'
    answers = [
        (f'{opening}{v.RESPONSE_SUCCESS}"/>', "Success"),
        (f'{opening}{v.RESPONSE_FAILURE}"/>', "Failure"),
        (f'{opening}{v.RESPONSE_SUCCESS}"/>', "Success"),
        (f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}"/>', ""),
        (
            f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" x="y" status="{v.RESPONSE_PARTIAL_SUCCESS}"/>',
            "PartialSuccess",
        ),
        (f'{opening}{v.RESPONSE_SUCCESS}"/>', "Success"),
    ]
    _, entries = _through_an_endpoint(tmp_path, [("10.0.0.7", answer.encode()) for answer, _ in answers])
    assert [e[:1] for _, e in entries] == [capture.QUERY] * len(answers)
    got = [capture.rebuild(e, f"s.seg:{at}")[0] for at, e in entries]
    # (Failure: serious; PartialSuccess: minor)
    assert [g.outcome for g in got] == ["0", "8", "0", "0", "4", "0"]
    heads = [capture.STATUSES[capture._QUERY_HEAD.unpack_from(e)[2]] for _, e in entries]
    assert heads == [status for _, status in answers]


def test_an_endpoint_keeps_a_bounded_number_of_client_lines(tmp_path: Path) -> None:
    """The line kept for each client of an endpoint is bounded (the clients' addresses are the
    clients'): 300 clients leave at most 128 lines kept, and each entry names its own client."""
    from xds.audit import capture
    from xds.metadata import vocabulary as v

    answer = f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" status="{v.RESPONSE_SUCCESS}"/>'.encode()
    clients = [f"10.0.{i // 256}.{i % 256}" for i in range(300)]
    auditor, entries = _through_an_endpoint(tmp_path, [(client, answer) for client in clients])
    (known,) = auditor._plain.values()
    assert known and 0 < len(known[3]) <= 128
    got = [capture.rebuild(e, f"s.seg:{at}")[0] for at, e in entries]
    assert [next(p.network_id for p in msg.participants if p.requestor) for msg in got] == clients
