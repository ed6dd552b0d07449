"""SOAP 1.2 envelopes with WS-Addressing 1.0, as IHE web services use them (ITI TF-2 Appendix V).

Requests are parsed once with the project's safe parser; responses are written as byte templates
around the payload, so the envelope costs almost nothing on the hot path. Faults follow SOAP 1.2
Part 1 §5.4; the WS-Addressing fault subcodes are those of WS-Addressing 1.0 SOAP Binding §6.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from lxml import etree

from xds import safexml
from xds.metadata import vocabulary as v

NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
WSA_NONE = "http://www.w3.org/2005/08/addressing/none"
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
SOAP12_CONTENT_TYPE = "application/soap+xml"

_ENV = "{" + v.NS_SOAP12 + "}"
_WSA = "{" + v.NS_WSA + "}"
# WS-Addressing message addressing properties this service reads or may be sent; a request
# carries each at most once, but RelatesTo
_WSA_ONCE = frozenset(_WSA + name for name in ("Action", "MessageID", "ReplyTo", "To", "From", "FaultTo"))
WSA_HEADERS = _WSA_ONCE | {_WSA + "RelatesTo"}
_ROLE_ULTIMATE = "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"
_ROLE_NEXT = "http://www.w3.org/2003/05/soap-envelope/role/next"


class SoapFault(Exception):
    """A SOAP 1.2 fault (SOAP 1.2 Part 1 §5.4): its code, an optional subcode and detail.

    ``not_understood`` names the header blocks (``{ns}local``) a MustUnderstand fault is about
    (Part 1 §5.4.8, answered as env:NotUnderstood header blocks); ``message_id`` is the
    wsa:MessageID of the message it answers, when one was read (the fault's wsa:RelatesTo).
    """

    def __init__(
        self,
        code: str,
        reason: str,
        subcode: str | None = None,
        detail: str | None = None,
        *,
        not_understood: tuple[str, ...] = (),
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.subcode = subcode
        self.detail = detail
        self.not_understood = not_understood
        self.message_id: str | None = None

    @property
    def http_status(self) -> int:
        """SOAP 1.2 Part 2 §7.5.2.2 (Table 20): env:Sender is 400 Bad Request; env:VersionMismatch,
        env:MustUnderstand, env:DataEncodingUnknown and env:Receiver are 500 Internal Server Error."""
        return 400 if self.code == "Sender" else 500


@dataclass
class Attachment:
    """One MIME part of an MTOM message, held in memory or spooled to a temporary file — or, in
    an answer, ``stream``: its bytes passed on as they arrive from elsewhere (a relay)."""

    content_id: str
    content_type: str = "application/octet-stream"
    data: bytes | None = None
    path: str | None = None
    size: int = 0
    sha1: str = ""
    stream: AsyncIterator[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, content_id: str, content_type: str, data: bytes) -> Attachment:
        return cls(content_id, content_type, data=data, size=len(data), sha1=hashlib.sha1(data).hexdigest())

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        with open(self.path, "rb") as fh:
            return fh.read()

    def open(self) -> BinaryIO:
        if self.data is not None:
            import io

            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    def copy_to(self, target: BinaryIO) -> None:
        with self.open() as fh:
            shutil.copyfileobj(fh, target, 1024 * 1024)

    def discard(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


@dataclass
class SoapRequest:
    """A parsed SOAP 1.2 message: addressing headers, payload and attachments."""

    action: str
    message_id: str | None
    reply_to: str | None
    envelope: etree._Element
    header: etree._Element | None
    body: etree._Element
    attachments: dict[str, Attachment] = field(default_factory=dict)
    mtom: bool = False
    raw: bytes = b""  # the envelope's bytes as received (what signatures were computed over)
    security: object | None = None  # set by the endpoint's security policy (who asked, why, for whom)
    unstored: OSError | None = None  # why a part could not be spooled (a full disk): not handled
    facts: dict[str, object] = field(default_factory=dict)  # what the handler tells the observer


@dataclass
class SoapResponse:
    """What a handler answers: the response action, its payload and any attachments."""

    action: str
    body: etree._Element | bytes
    attachments: list[Attachment] = field(default_factory=list)
    extra_headers: list[etree._Element] = field(default_factory=list)


# -------------------------------------------------------------------------------------------------
# parsing
# -------------------------------------------------------------------------------------------------
def parse_envelope(
    data: bytes,
    attachments: dict[str, Attachment] | None = None,
    *,
    mtom: bool = False,
    request: bool = False,
) -> SoapRequest:
    """Parse a SOAP 1.2 envelope; SoapFault (Sender / VersionMismatch) when it is not one.

    An answer whose Body is a Fault raises that fault (as a client reads it); a ``request``
    carrying a Fault is refused as the sender's error, never taken for the service's own.
    """
    try:
        root = safexml.parse(data)
    except safexml.XmlRejected as exc:
        raise SoapFault("Sender", f"the message is not acceptable XML: {exc}") from None
    if root.tag == "{" + NS_SOAP11 + "}Envelope":
        raise SoapFault("VersionMismatch", "SOAP 1.1 envelopes are not accepted; IHE requires SOAP 1.2")
    if root.tag != _ENV + "Envelope":
        raise SoapFault("Sender", "the message is not a SOAP 1.2 Envelope")
    header = body = None
    children = [c for c in root if isinstance(c.tag, str)]
    for child in children:
        if child.tag == _ENV + "Header":
            header = child
        elif child.tag == _ENV + "Body":
            body = child
    action, message_id, reply_to = _addressing(header, request)
    try:
        payload = _payload(root, children, header, body, request)
    except SoapFault as fault:
        fault.message_id = message_id
        raise
    if payload.tag == _ENV + "Fault":
        if request:
            fault = SoapFault("Sender", "the Body holds a SOAP Fault, which is not a request")
            fault.message_id = message_id
            raise fault
        raise fault_from_element(payload)
    return SoapRequest(
        raw=data,
        action=action or "",
        message_id=message_id,
        reply_to=reply_to,
        envelope=root,
        header=header,
        body=payload,
        attachments=attachments or {},
        mtom=mtom,
    )


def _addressing(header: etree._Element | None, request: bool) -> tuple[str | None, str | None, str | None]:
    """wsa:Action, wsa:MessageID and wsa:ReplyTo's address; at most one of each in a request."""
    action = message_id = reply_to = None
    if header is None:
        return action, message_id, reply_to
    seen: set[str] = set()
    for h in header:
        if h.tag in _WSA_ONCE:
            if request and h.tag in seen:  # WS-Addressing 1.0 Core §3.2: at most one of each
                name = etree.QName(h).localname
                raise SoapFault("Sender", f"wsa:{name} appears twice", "wsa:InvalidAddressingHeader")
            seen.add(h.tag)
        if h.tag == _WSA + "Action":
            action = (h.text or "").strip()
        elif h.tag == _WSA + "MessageID":
            message_id = (h.text or "").strip()
        elif h.tag == _WSA + "ReplyTo":
            addr = h.find(_WSA + "Address")
            reply_to = (addr.text or "").strip() if addr is not None else ""
    return action, message_id, reply_to


def _payload(
    root: etree._Element,
    children: list[etree._Element],
    header: etree._Element | None,
    body: etree._Element | None,
    request: bool,
) -> etree._Element:
    """The Body's element, once the envelope's shape is checked (SOAP 1.2 Part 1 §5.1)."""
    if body is None:
        raise SoapFault("Sender", "the SOAP Envelope has no Body")
    if request and children != ([header, body] if header is not None else [body]):
        # SOAP 1.2 Part 1 §5.1: an optional Header, then the Body, and nothing else
        raise SoapFault("Sender", "the SOAP Envelope must hold an optional Header followed by one Body")
    payloads = [c for c in body if isinstance(c.tag, str)]
    if not payloads:
        raise SoapFault("Sender", "the SOAP Body is empty")
    if request and len(payloads) > 1:
        raise SoapFault("Sender", f"the SOAP Body holds {len(payloads)} elements; a request is one")
    return payloads[0]


def not_understood(header: etree._Element | None, understood: frozenset[str]) -> str | None:
    """The first header block addressed to this node with ``mustUnderstand`` whose name is not in
    ``understood``, as ``{ns}local`` (SOAP 1.2 Part 1 §5.2.3, §2.4), or None."""
    missed = all_not_understood(header, understood)
    return missed[0] if missed else None


def all_not_understood(header: etree._Element | None, understood: frozenset[str]) -> tuple[str, ...]:
    """Every header block addressed to this node with ``mustUnderstand`` that is not in
    ``understood``, as ``{ns}local`` (SOAP 1.2 Part 1 §5.2.3, §2.4)."""
    if header is None:
        return ()
    missed = []
    for h in header:
        if not isinstance(h.tag, str) or h.tag in understood:
            continue
        if (h.get(_ENV + "mustUnderstand") or "").strip() not in ("true", "1"):
            continue
        role = (h.get(_ENV + "role") or _ROLE_ULTIMATE).strip()
        if role in (_ROLE_ULTIMATE, _ROLE_NEXT):
            missed.append(str(h.tag))
    return tuple(missed)


def fault_from_element(el: etree._Element) -> SoapFault:
    code = el.findtext(f"{_ENV}Code/{_ENV}Value") or "Receiver"
    subcode = el.findtext(f"{_ENV}Code/{_ENV}Subcode/{_ENV}Value")
    reason = el.findtext(f"{_ENV}Reason/{_ENV}Text") or ""
    detail_el = el.find(_ENV + "Detail")
    detail = "".join(detail_el.itertext()) if detail_el is not None else None
    return SoapFault(code.split(":")[-1], reason, subcode, detail)


# -------------------------------------------------------------------------------------------------
# writing
# -------------------------------------------------------------------------------------------------
_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


def _text(value: str) -> str:
    return value.translate(_ESC)


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _payload_bytes(body: etree._Element | bytes) -> bytes:
    return body if isinstance(body, bytes) else etree.tostring(body)


def envelope_bytes(
    action: str,
    body: etree._Element | bytes,
    *,
    relates_to: str | None = None,
    message_id: str | None = None,
    to: str | None = None,
    reply_to_anonymous: bool = False,
    extra_headers: Iterable[etree._Element | bytes] = (),
) -> bytes:
    """A SOAP 1.2 envelope with WS-Addressing headers around ``body``."""
    head = [
        f'<env:Envelope xmlns:env="{v.NS_SOAP12}" xmlns:wsa="{v.NS_WSA}"><env:Header>'
        f'<wsa:Action env:mustUnderstand="1">{_text(action)}</wsa:Action>'
        f"<wsa:MessageID>{_text(message_id or new_message_id())}</wsa:MessageID>"
    ]
    if reply_to_anonymous:
        head.append(f"<wsa:ReplyTo><wsa:Address>{WSA_ANONYMOUS}</wsa:Address></wsa:ReplyTo>")
    if to:
        head.append(f'<wsa:To env:mustUnderstand="1">{_text(to)}</wsa:To>')
    if relates_to:
        head.append(f"<wsa:RelatesTo>{_text(relates_to)}</wsa:RelatesTo>")
    for h in extra_headers:
        head.append((h if isinstance(h, bytes) else etree.tostring(h)).decode())
    head.append("</env:Header><env:Body>")
    return "".join(head).encode() + _payload_bytes(body) + b"</env:Body></env:Envelope>"


def build_request(
    action: str,
    body: etree._Element | bytes,
    *,
    message_id: str | None = None,
    to: str | None = None,
    extra_headers: Iterable[etree._Element | bytes] = (),
) -> tuple[bytes, str]:
    """A plain SOAP 1.2 request: (bytes, Content-Type)."""
    data = envelope_bytes(
        action, body, message_id=message_id, to=to, reply_to_anonymous=True, extra_headers=extra_headers
    )
    return data, f'{SOAP12_CONTENT_TYPE}; charset=UTF-8; action="{action}"'


# SOAP 1.2 Part 1 §5.4.6: the only values of a Fault's Code
FAULT_CODES = frozenset({"VersionMismatch", "MustUnderstand", "DataEncodingUnknown", "Sender", "Receiver"})


def fault_bytes(fault: SoapFault, *, relates_to: str | None = None) -> bytes:
    """A SOAP 1.2 Fault envelope (SOAP 1.2 Part 1 §5.4) with the WS-Addressing fault action."""
    sub = ""
    if fault.subcode:
        prefix, _, local = fault.subcode.rpartition(":")
        ns = {"wsa": v.NS_WSA, "": v.NS_WSA, "wsse": NS_WSSE}.get(prefix, "urn:xds:fault")
        sub = f'<env:Subcode><env:Value xmlns:f="{ns}">f:{_text(local)}</env:Value></env:Subcode>'
    detail = f"<env:Detail>{_text(fault.detail)}</env:Detail>" if fault.detail else ""
    code = fault.code if fault.code in FAULT_CODES else "Receiver"
    body = (
        f'<env:Fault xmlns:env="{v.NS_SOAP12}"><env:Code><env:Value>env:{code}</env:Value>{sub}</env:Code>'
        f'<env:Reason><env:Text xml:lang="en">{_text(fault.reason)}</env:Text></env:Reason>{detail}</env:Fault>'
    ).encode()
    return envelope_bytes(
        WSA_FAULT_ACTION,
        body,
        relates_to=relates_to or fault.message_id,
        extra_headers=_fault_headers(code, fault),
    )


def _fault_headers(code: str, fault: SoapFault) -> list[bytes]:
    """env:NotUnderstood blocks of a MustUnderstand fault (SOAP 1.2 Part 1 §5.4.8) and the
    env:Upgrade block of a VersionMismatch fault naming the envelope supported (§5.4.7)."""
    if code == "MustUnderstand":
        return [
            f'<env:NotUnderstood xmlns:env="{v.NS_SOAP12}" xmlns:nu="{_text(etree.QName(name).namespace or "")}" '
            f'qname="nu:{_text(etree.QName(name).localname)}"/>'.encode()
            for name in fault.not_understood
        ]
    if code == "VersionMismatch":
        return [
            f'<env:Upgrade xmlns:env="{v.NS_SOAP12}"><env:SupportedEnvelope qname="env:Envelope"/></env:Upgrade>'.encode()
        ]
    return []
