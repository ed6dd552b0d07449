"""The request path's part of an audit event: the exchange as it was, its message built later.

A stored query or a registration (ITI-18, ITI-38, ITI-41, ITI-42, ITI-51, ...: the ``query`` and
``submission`` kinds, whose audit message is read from the request alone) is spooled as its
facts — a small JSON head (the action, the time, the answer's status, who asked, the two ends, the
audit source, the event's id) and, for a query, the request's envelope bytes as received with
where the payload sits in it, for a submission its two objects (the patient, the SubmissionSet)
— with no audit message built: a few microseconds. An unsigned query answered without a fault
(the common case) is spooled in fewer steps still, as a ``Q`` entry (:func:`query_entry`): a
binary head (the time, the status), one JSON line the endpoint keeps made for each client (the
client, the action, the two ends, the audit source) and the envelope, whose payload is wherever
:func:`xds.soap.envelope.parse_envelope` finds it. The delivery side
(:func:`rebuild`) parses a query's envelope again and takes the payload from the same place, and
builds the message with :func:`xds.audit.events.responder_events`, as ITI TF-2a §3.20.7 and each transaction's audit
section say, exactly as the request path would have.

Everything else is built on the request path as before: retrievals and removals (the documents'
patient is looked up while the registry still holds them), MTOM messages (their envelope is not
the whole request), envelopes over :data:`MAX_ENVELOPE` bytes, and a payload that is not a node of
the envelope.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import time
import uuid
from collections.abc import Callable

from lxml import etree

from xds import safexml
from xds.audit import events
from xds.audit import message as m
from xds.audit.requester import Requester
from xds.audit.transactions import Transaction
from xds.soap.envelope import parse_envelope

MARK = b"E"  # a captured exchange in the spool (the other spooled forms are JSON: "[" or "{")
QUERY = b"Q"  # an unsigned query answered without a fault (query_entry)
_QUERY_HEAD = struct.Struct(">cQB")  # QUERY, the time in nanoseconds, the status (STATUSES)
STATUSES = ("Success", "PartialSuccess", "Failure", "")  # an answer's status, as a Q entry's code
MAX_ENVELOPE = 256 * 1024
KINDS = frozenset({"query", "submission"})
EVENTS = uuid.UUID("6a1f3c52-2f0e-4b8e-9d7a-1c3e5b7d9f20")  # namespace of the events' name-based ids


def capture(
    tx: Transaction,
    request: object,
    status: str,
    fault: str,
    refused: bool,
    who: Requester,
    ends: tuple[str, str],
    source: m.AuditSource,
    home_community_id: str = "",
) -> bytes | None:
    """The spool entry of one answered exchange (a ``SoapRequest``), or None when its message must
    be built now (see the module's note)."""
    found = _envelope(request) if tx.kind in KINDS else None
    if found is None:
        return None
    raw, tree, body = found
    # a submission's two facts are read now (cheaper than parsing its metadata again later); a
    # query is kept as received (its message carries all of it)
    if tx.kind == "submission":
        payload = _objects(request, body)
        raw = b""
    else:
        payload = _text(tree.getelementpath(body))
    middle = _middle(status, fault, refused, _requester(who))
    same = fixed(ends[1], getattr(request, "reply_to", None) or "", home_community_id, source).encode("ascii")
    return _entry(opening(getattr(request, "action", "")), middle, ends[0], same, payload, raw)


# The head is the JSON list rebuild() reads (the time in nanoseconds: an integer is formatted in a
# third of a float's time), written piece by piece (json.dumps with its own
# separators makes a new encoder for every call: more than all the rest of this). An endpoint's
# unsigned submissions (the common case) are written by submission_entry() from pieces made once
# (pieces); its unsigned queries as Q entries (query_entry).
def opening(action: str) -> bytes:
    """What an entry for ``action`` starts with."""
    return MARK + b"[" + _text(action).encode("ascii") + b","


def fixed(server: str, reply_to: str, home: str, source: m.AuditSource) -> str:
    """The head's fields that stay the same for an endpoint: from the answering URL to the process,
    with the commas around them."""
    # (the event's id, "": made by the delivery side from where the entry sits in the spool)
    return f',{_text(server)},{_text(reply_to)},{_text(home)},{_source(source)},"",{_PROCESS_ID},'


def _source(source: m.AuditSource) -> str:
    return f"[{_text(source.source_id)},{_text(source.enterprise_site_id)},{_text(source.type_code)}]"


def pieces(action: str, server: str, reply_to: str, home: str, source: m.AuditSource) -> tuple[bytes, bytes]:
    """What every :func:`submission_entry` of an endpoint, action and reply-to address holds: the
    piece before the time (:func:`opening`) and the piece after the client (:func:`fixed`)."""
    return opening(action), fixed(server, reply_to, home, source).encode("ascii")


def query_entry(
    action: str,
    server: str,
    reply_to: str,
    home: str,
    source: m.AuditSource,
    answer: bytes,
    client: str,
    raw: bytes,
) -> bytes:
    """:func:`capture` of a query that named no one (no assertion), had no fault, was answered with
    ``answer`` (the response payload's bytes) and received as ``raw`` (the whole envelope, not
    MTOM, at most :data:`MAX_ENVELOPE` bytes), as a ``Q`` entry: :func:`query_head` (the time, the
    status's code from :func:`status_opening`, and :func:`query_line`) before the envelope. The
    payload is the one :func:`xds.soap.envelope.parse_envelope` reads from the envelope, as the
    endpoint did. The endpoint writes the same entry from what it keeps for the endpoint and
    client (the line, its last answer's opening), without making it: the head, then the envelope,
    each copied into the spool (:meth:`xds.audit.trail.AuditTrail.writer`)."""
    line = query_line(client, query_piece(action, server, reply_to, home, source))
    return query_head(line, status_opening(answer)[1]) + raw


def query_piece(action: str, server: str, reply_to: str, home: str, source: m.AuditSource) -> bytes:
    """What every ``Q`` entry's line of an endpoint, action and reply-to address holds after the
    client: the action, the answering URL, the reply-to address, the home community, the audit
    source and the process, closing the line."""
    return f",{_text(action)},{_text(server)},{_text(reply_to)},{_text(home)},{_source(source)},{_PROCESS_ID}]\n".encode(
        "ascii"
    )


def query_line(client: str, piece: bytes) -> bytes:
    """A ``Q`` entry's JSON line: the client's address, then the endpoint's :func:`query_piece`."""
    return b"[" + _text(client).encode("ascii") + piece


def query_head(
    line: bytes,
    status: int,
    _pack: Callable[..., bytes] = _QUERY_HEAD.pack,
    _now: Callable[[], int] = time.time_ns,
) -> bytes:
    """What a ``Q`` entry puts before the envelope: the mark, the time (nanoseconds) and the
    status's code in :data:`_QUERY_HEAD`, then ``line`` (:func:`query_line`). (What it uses is
    bound to it: on every query, on a busy process's cold caches, each global looked up costs.)"""
    return _pack(QUERY, _now(), status) + line


def status_opening(answer: bytes) -> tuple[bytes, int]:
    """The code of the answer's status (its index in :data:`STATUSES`, 3: none) — the one
    :func:`xds.audit.events.response_status` reads from the answer's bytes — and, when that status
    is the answer's first (its own, near its start), the answer's bytes up to its end: an answer
    that starts with those bytes has that status (b"": none to tell)."""
    at = answer.find(_STATUS_AT, 0, 8192)
    if at >= 0:
        at += len(_STATUS_AT)
        word = _STATUS_FIRST.get(answer[at : at + 1])
        if word is not None and answer.startswith(word[0], at, 8192):
            return answer[: at + len(word[0])], word[1]
    return b"", status_code(answer)


def status_code(answer: bytes) -> int:
    """The answer's status (:func:`xds.audit.events.response_status`) as its index in
    :data:`STATUSES` (3: none)."""
    return STATUSES.index(events.response_status(answer))


_STATUS_AT = b"ResponseStatusType:"
_STATUS_FIRST = {s[:1].encode(): (s.encode(), i) for i, s in enumerate(STATUSES[:3])}


def submission_entry(start: bytes, same: bytes, answer: bytes, client: str, request: object) -> bytes:
    """:func:`capture` of a submission that named no one (no assertion), had no fault and was
    answered with ``answer`` (the response payload's bytes), from its endpoint's :func:`pieces`
    (``start``, ``same``)."""
    objects = _objects(request, getattr(request, "body", None))
    return _entry(start, answered(answer), client, same, objects, b"")


def answered(answer: bytes) -> bytes:
    """The head from the status to the requester of an exchange that named no one, had no fault
    and was answered with ``answer`` (the response payload's bytes)."""
    found = events.STATUS.search(answer, 0, 8192)
    return _PLAIN[found[1] if found else b""]


def _objects(request: object, body: etree._Element | None) -> str:
    """A submission's patient and SubmissionSet as JSON: as the handler read them (its facts), or
    read from the request now."""
    ids = getattr(request, "facts", {}).get("submission")
    if ids is not None:
        patient, unique_id = ids
        found = [f"[{_text(patient)},{_PATIENT}"] if patient else []
        if unique_id:
            found.append(f"[{_text(unique_id)},{_SUBMISSION_SET}")
        return "[" + ",".join(found) + "]"
    objects = events.submission_objects(body) if body is not None else []
    return json.dumps([m.object_wire(o) for o in objects])


def _wire_after_id(o: m.ParticipantObject) -> str:
    """The JSON of ``o``'s :func:`xds.audit.message.object_wire` after its id (and its comma)."""
    return json.dumps(m.object_wire(o)[1:])[1:]


_PATIENT = _wire_after_id(events.submission_objects_of("p", "")[0])
_SUBMISSION_SET = _wire_after_id(events.submission_objects_of("", "s")[0])


def _envelope(request: object) -> tuple[bytes, etree._ElementTree, etree._Element] | None:
    """The request's bytes, its tree and its payload, when the bytes are the whole envelope (not
    MTOM, not over :data:`MAX_ENVELOPE`) and the payload is part of it."""
    raw: bytes = getattr(request, "raw", b"")
    envelope = getattr(request, "envelope", None)
    body = getattr(request, "body", None)
    if getattr(request, "mtom", True) or not raw or len(raw) > MAX_ENVELOPE or body is None:
        return None
    tree = body.getroottree()
    if envelope is None or tree.getroot() is not envelope:
        return None
    return raw, tree, body


def _entry(start: bytes, middle: bytes, client: str, same: bytes, payload: str, raw: bytes) -> bytes:
    """One spool entry: the head's pieces in their order (:func:`opening`, the time, ``middle``
    from the status to the requester, the client, :func:`fixed`, the payload), then the bytes."""
    when = b"%d" % time.time_ns()
    head = (start, when, middle, _text(client).encode("ascii"), same, payload.encode("ascii"))
    return b"".join((*head, b"]\n", raw))


def _middle(status: str, fault: str, refused: bool, requester: str) -> bytes:
    """The head from the answer's status to the requester (a JSON list already), with the commas
    around them."""
    return f",{_text(status)},{_text(fault)},{'true' if refused else 'false'},{requester},".encode("ascii")


def _requester(who: Requester) -> str:
    fields = (who.subject, who.hpr_number, who.role, who.organisation, who.organisation_id)
    fields += (who.purpose_of_use, who.patient, who.issuer)
    if not any(fields):
        return _NOBODY
    return "[" + ",".join(map(_text, fields)) + "]"


_text = json.encoder.encode_basestring_ascii  # a str as a JSON string (C), as json.dumps writes it
_NOBODY = "[" + ",".join(['""'] * 8) + "]"
_PROCESS_ID = _text(events.PROCESS_ID)
# no fault, not refused, no one named: an unsigned query's, made once for each status found
_PLAIN = {
    status.encode(): _middle(status, "", False, _NOBODY)
    for status in ("Success", "PartialSuccess", "Failure", "")
}


def event_id(position: str) -> str:
    """The event id of the spool entry at ``position`` (``segment:offset``; segment names are
    unique): the same whenever the entry is read, in whichever process."""
    return str(uuid.uuid5(EVENTS, position)) if position else str(uuid.uuid4())


def rebuild(data: bytes, position: str = "") -> tuple[m.AuditMessage, Requester]:
    """The audit message of a spool entry :func:`capture` or :func:`query_entry` wrote at
    ``position``, and who asked."""
    if data[:1] == QUERY:
        _, when, code = _QUERY_HEAD.unpack_from(data)
        line, _, raw = data[_QUERY_HEAD.size :].partition(b"\n")
        client, action, server, reply_to, home, src, pid = json.loads(line)
        exchange = events.Exchange(
            action=action,
            request=parse_envelope(raw, request=True).body,
            security=Requester(),
            client=client,
            server=server,
            reply_to=reply_to,
            home_community_id=home,
            status=STATUSES[code],
            process_id=pid,
        )
        return _message(exchange, src, when, "", position), Requester()
    head, _, raw = data[len(MARK) :].partition(b"\n")
    action, when, status, fault, refused, who, client, server, reply_to, home, src, uid, pid, payload = (
        json.loads(head)
    )
    body = objects = None
    if payload is None:  # the payload the endpoint read (an unsigned query, as earlier versions wrote it)
        body = parse_envelope(raw, request=True).body
    elif isinstance(payload, str):  # where the payload is in the envelope
        body = safexml.parse(raw).find(payload)
    else:  # the payload's objects, read on the request path
        objects = [m.object_from_wire(o) for o in payload]
    requester = Requester(*who)
    exchange = events.Exchange(
        action=action,
        request=body,
        fault=fault,
        refused=refused,
        security=requester,
        client=client,
        server=server,
        reply_to=reply_to,
        home_community_id=home,
        status=status,
        process_id=pid,
        objects=objects,
    )
    return _message(exchange, src, when, uid, position), requester


def _message(
    exchange: events.Exchange, src: list[str], when: int | float, uid: str, position: str
) -> m.AuditMessage:
    """The one audit message of a spooled exchange, with its time (nanoseconds; earlier versions:
    seconds) and its id (``uid``, or made from the entry's ``position``)."""
    built = events.responder_events(exchange, m.AuditSource(*src))
    if len(built) != 1:
        raise ValueError(f"a captured {exchange.action} exchange gave {len(built)} audit messages")
    msg = built[0]
    seconds = when / 1e9 if isinstance(when, int) else when
    msg.when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    msg.event_uuid = uid or event_id(position)
    return msg
