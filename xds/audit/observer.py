"""The audit trail's hooks: a SOAP endpoint's exchanges, the ITI-8 feed, and a client's requests.

:class:`EndpointAuditor` is an ``xds.soap.endpoint.ExchangeObserver``: told of each answered
exchange, it appends the transaction's audit event to the trail: for a query or a submission the
exchange's facts (:mod:`xds.audit.capture`), whose message the delivery side builds, otherwise the
messages themselves (:mod:`xds.audit.events`). It runs before the answer leaves (a client holding
its answer knows the exchange is on record) and never raises into the endpoint.
"""

from __future__ import annotations

import logging
import socket

from starlette.types import Scope

from xds.audit import capture, events
from xds.audit.message import AuditSource
from xds.audit.requester import Requester, from_context
from xds.audit.trail import AuditTrail
from xds.audit.transactions import by_action
from xds.soap.envelope import SoapFault, SoapRequest, SoapResponse

log = logging.getLogger("xds.audit")
# an endpoint's pieces of its unsigned queries' or submissions' entries (EndpointAuditor._learn),
# empty for any other action
Pieces = tuple[bytes, bytes, bool, dict[str, bytes], list[bytes | int]]
Known = Pieces | tuple[()]


def default_source(source_id: str = "", site: str = "") -> AuditSource:
    """This process as the audit source (``xds@HOSTNAME`` unless configured)."""
    return AuditSource(source_id or f"xds@{socket.gethostname()}", site)


class EndpointAuditor:
    """Audits every exchange of the SOAP endpoints it is attached to (responding side)."""

    def __init__(
        self,
        trail: AuditTrail,
        source: AuditSource,
        *,
        owners: events.OwnerLookup | None = None,
        home_community_id: str = "",
    ) -> None:
        self.trail = trail
        self.source = source
        self.owners = owners
        self.home_community_id = home_community_id
        self._plain: dict[tuple[object, ...], Known] = {}
        self._write = trail.writer()

    def exchanged(
        self,
        scope: Scope,
        request: SoapRequest,
        response: SoapResponse | None,
        fault: SoapFault | None,
        refused: bool,
    ) -> None:
        try:
            if fault is None and request.security is None and not request.mtom:
                # the common cases first, in the fewest steps: a query or a submission that named
                # no one, answered (capture.query_entry, capture.submission_entry); its message is
                # built by the delivery side
                key = (
                    request.action,
                    request.reply_to,
                    scope.get("path"),
                    scope.get("server"),
                    scope.get("root_path"),
                    scope.get("scheme"),
                )
                known = self._plain.get(key)
                if known is None:
                    known = self._learn(key, scope, request)
                answer = response.body if response is not None else None
                if known and isinstance(answer, bytes):
                    client = scope.get("client")
                    host = (client[0] or "") if client else ""
                    if known[2]:  # a query
                        raw = request.raw
                        if raw and len(raw) <= capture.MAX_ENVELOPE:
                            line = known[3].get(host)
                            if line is None:
                                line = _line(known, host)
                            seen = known[4]  # the last answer's opening up to its status, its code
                            if seen[0] and answer.startswith(seen[0]):
                                code = seen[1]
                            else:
                                seen[0], seen[1] = opening, code = capture.status_opening(answer)
                            self._write(capture.query_head(line, code), raw)
                            return
                    else:
                        self.trail.append(capture.submission_entry(known[0], known[1], answer, host, request))
                        return
            client = (scope.get("client") or ("",))[0] or ""
            status = events.response_status(response.body) if response is not None else ""
            who = from_context(request.security)
            tx = by_action(request.action)
            if tx is None:
                return
            captured = capture.capture(
                tx,
                request,
                status,
                fault.reason if fault is not None else "",
                refused,
                who,
                (client, _url(scope)),
                self.source,
                self.home_community_id,
            )
            if captured is not None:  # its message is built by the delivery side
                self.trail.append(captured)
                return
            exchange = events.Exchange(
                action=request.action,
                request=request.body,
                response=response.body if response is not None else None,
                fault=fault.reason if fault is not None else "",
                refused=refused,
                security=who,
                client=client,
                server=_url(scope),
                reply_to=request.reply_to or "",
                home_community_id=self.home_community_id,
                status=status,
                patients=_patients(request),
            )
            self.trail.record(events.responder_events(exchange, self.source, self.owners), who)
        except Exception:
            log.exception("audit event for %s could not be recorded", request.action)

    def _learn(self, key: tuple[object, ...], scope: Scope, request: SoapRequest) -> Known:
        """What the entries of unsigned queries and submissions to an endpoint, action and reply-to
        address hold, made once: a submission's :func:`xds.audit.capture.pieces`, or a query's
        mark and :func:`xds.audit.capture.query_piece`, with the kind, the lines made of it for
        each client so far (:func:`_line`) and the last answer's opening up to its status with the
        status's code (:func:`xds.audit.capture.status_opening`: an answer starting the same way
        has the same status); empty for any other action."""
        tx = by_action(request.action)
        known: Known = ()
        if tx is not None and tx.kind == "query":
            piece = capture.query_piece(
                request.action, _url(scope), request.reply_to or "", self.home_community_id, self.source
            )
            known = (capture.QUERY, piece, True, {}, [b"", 3])
        elif tx is not None and tx.kind in capture.KINDS:
            start, same = capture.pieces(
                request.action, _url(scope), request.reply_to or "", self.home_community_id, self.source
            )
            known = (start, same, False, {}, [b"", 3])
        if len(self._plain) >= 256:  # (actions, paths and reply-to addresses are the client's)
            self._plain.clear()
        self._plain[key] = known
        return known

    def feed(self, raw: bytes, ack: str, peer: str = "") -> None:
        """ITI-8: one message received and acknowledged."""
        try:
            self.trail.record(events.feed_events(raw, ack, peer, self.source))
        except Exception:
            log.exception("audit event for an ITI-8 message could not be built")


class ClientAuditor:
    """Audits the transactions a client asks (requesting side), as the human it speaks for."""

    def __init__(self, trail: AuditTrail, source: AuditSource, requester: Requester | None = None) -> None:
        self.trail = trail
        self.source = source
        self.requester = requester or Requester()

    def requested(
        self,
        action: str,
        request: object,
        response: object,
        url: str,
        fault: str = "",
    ) -> None:
        try:
            exchange = events.Exchange(
                action=action,
                request=request,  # type: ignore[arg-type]
                response=response,  # type: ignore[arg-type]
                fault=fault,
                security=self.requester,
                client=socket.gethostname(),
                server=url,
            )
            self.trail.record(events.requester_events(exchange, self.source), self.requester)
        except Exception:
            log.exception("audit event for %s could not be built", action)


def _line(known: Pieces, host: str) -> bytes:
    """A query entry's line for an endpoint and a client (:func:`xds.audit.capture.query_line`),
    kept with the endpoint's pieces (at most 128 clients each: their addresses are the
    clients')."""
    lines = known[3]
    if len(lines) >= 128:
        lines.clear()
    made = lines[host] = capture.query_line(host, known[1])
    return made


def _patients(request: SoapRequest) -> list[str] | None:
    """The patients the handler found the request's objects to concern (ITI-62: the removed
    objects' patients, read before they are gone), when it says."""
    found = getattr(request, "facts", {}).get("patients")
    return [str(p) for p in found] if isinstance(found, list) else None


def _url(scope: Scope) -> str:
    server = scope.get("server") or ("", None)
    host, port = server[0] or "", server[1]
    scheme = scope.get("scheme", "http")
    netloc = f"[{host}]" if ":" in host else host
    if port and (scheme, port) not in (("http", 80), ("https", 443)):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{scope.get('root_path', '')}{scope.get('path', '')}"
