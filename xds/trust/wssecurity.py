"""WS-Security for IHE SOAP messages: the requesting side signs, the responding side verifies.

OASIS WS-Security 1.1 (SOAP Message Security) with the SAML Token Profile, as ITI TF-2 §3.40.4.1.2
(XUA) carries the assertion: a ``wsse:Security`` header holding a ``wsu:Timestamp``, the signed
XUA assertion and the sending institution's signature over the Body, the Timestamp and the
WS-Addressing Action, MessageID (and To, when present) — RSA-SHA256, exclusive C14N.

Verification believes only what was signed: the references of the one message signature (the
``ds:Signature`` that is a child of ``wsse:Security``) must cover those elements, each resolved by
an unambiguous wsu:Id; the payload handed on is the Body as the signature covered it, and the
Action and MessageID are the signed ones. So every signature-wrapping variant — a moved or
duplicated Body, a second Security header, the signature pointing at another element — fails or
is ignored.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import VerificationError
from lxml import etree
from signxml import InvalidInput, SignatureConstructionMethod, XMLSigner, XMLVerifier
from signxml.exceptions import InvalidSignature

from xds import safexml
from xds.metadata import vocabulary as v
from xds.trust.assertion import (
    EXC_C14N,
    NS_DS,
    NS_SAML,
    AssertionRejected,
    VerifiedAssertion,
    _certificates,
    _signer,
    verify_assertion,
)
from xds.trust.keys import signature_algorithm, verify_chain

NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_ENV = "{" + v.NS_SOAP12 + "}"
_WSA = "{" + v.NS_WSA + "}"
_WSSE = "{" + NS_WSSE + "}"
_WSU = "{" + NS_WSU + "}"
_SIGNED_HEADERS = ("Action", "MessageID", "To")


def _instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sign_envelope(
    envelope: bytes,
    headers: tuple[str, ...],
    key_pem: bytes,
    cert_pem: bytes,
    *,
    token: etree._Element | None,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> bytes:
    root = safexml.parse(envelope)
    header = root.find(_ENV + "Header")
    if header is None:
        header = etree.Element(_ENV + "Header")
        root.insert(0, header)
    body = root.find(_ENV + "Body")
    if body is None:
        raise ValueError("the envelope has no Body")
    uris = []
    for el in [body, *(header.find(_WSA + name) for name in headers)]:
        if el is None:
            continue
        el.set(_WSU + "Id", el.get(_WSU + "Id") or f"id-{uuid.uuid4().hex}")
        uris.append("#" + el.get(_WSU + "Id"))
    security = etree.SubElement(
        header, _WSSE + "Security", {_ENV + "mustUnderstand": "true"}, nsmap={"wsse": NS_WSSE, "wsu": NS_WSU}
    )
    timestamp = etree.SubElement(security, _WSU + "Timestamp", {_WSU + "Id": f"ts-{uuid.uuid4().hex}"})
    etree.SubElement(timestamp, _WSU + "Created").text = _instant(now)
    etree.SubElement(timestamp, _WSU + "Expires").text = _instant(now + lifetime)
    uris.append("#" + timestamp.get(_WSU + "Id"))
    if token is not None:
        security.append(copy.deepcopy(token))
    signer = XMLSigner(
        method=SignatureConstructionMethod.detached,
        signature_algorithm=signature_algorithm(key_pem),
        digest_algorithm="sha256",
        c14n_algorithm=EXC_C14N,
    )
    signature = signer.sign(root, key=key_pem, cert=cert_pem.decode(), reference_uri=uris, id_attribute="Id")
    security.append(signature)
    return etree.tostring(root)


def secure_request(
    envelope: bytes,
    *,
    assertion: etree._Element,
    key_pem: bytes,
    cert_pem: bytes,
    lifetime: dt.timedelta = dt.timedelta(minutes=5),
    now: dt.datetime | None = None,
) -> bytes:
    """``envelope`` with a wsse:Security header: Timestamp, the assertion, the institution's signature."""
    return _sign_envelope(
        envelope,
        _SIGNED_HEADERS,
        key_pem,
        cert_pem,
        token=assertion,
        lifetime=lifetime,
        now=now or dt.datetime.now(dt.UTC),
    )


def secure_response(
    envelope: bytes, *, key_pem: bytes, cert_pem: bytes, lifetime: dt.timedelta = dt.timedelta(minutes=5)
) -> bytes:
    """An answer signed by the responding institution: Body, Timestamp, Action, MessageID, RelatesTo."""
    return _sign_envelope(
        envelope,
        ("Action", "MessageID", "RelatesTo"),
        key_pem,
        cert_pem,
        token=None,
        lifetime=lifetime,
        now=dt.datetime.now(dt.UTC),
    )


def verify_response(
    envelope: etree._Element, *, ca_pem_file: str | Path, relates_to: str | None = None
) -> x509.Certificate:
    """The responding institution's certificate, once its signature over the answer holds."""
    header = envelope.find(_ENV + "Header")
    securities = header.findall(_WSSE + "Security") if header is not None else []
    if len(securities) != 1:
        raise AssertionRejected("the answer carries no (or more than one) wsse:Security header")
    signatures = securities[0].findall(f"{{{NS_DS}}}Signature")
    if len(signatures) != 1 or len(envelope.findall(_ENV + "Body")) != 1:
        raise AssertionRejected("the answer must have one Body and one signature", "wsse:FailedCheck")
    uris = [ref.get("URI", "") for ref in signatures[0].iter(f"{{{NS_DS}}}Reference")]
    try:
        results = XMLVerifier().verify(
            envelope, ca_pem_file=str(ca_pem_file), expect_references=len(uris), id_attribute="Id"
        )
    except (InvalidSignature, InvalidInput) as exc:
        raise AssertionRejected(f"the answer's signature is not valid: {exc}", "wsse:FailedCheck") from None
    results = results if isinstance(results, list) else [results]
    signed = {etree.QName(r.signed_xml).localname: r.signed_xml for r in results if r.signed_xml is not None}
    body = envelope.find(_ENV + "Body")
    if "Body" not in signed or signed["Body"].get(_WSU + "Id") != body.get(_WSU + "Id"):
        raise AssertionRejected("the answer's signature does not cover its Body", "wsse:FailedCheck")
    if relates_to is not None and (
        signed.get("RelatesTo") is None or (signed["RelatesTo"].text or "").strip() != relates_to
    ):
        raise AssertionRejected("the answer's signed RelatesTo is not our request", "wsse:FailedCheck")
    return _signer(signatures[0])


@dataclass(frozen=True)
class SecurityContext:
    """Who asked, why, for whom — and what exactly they signed."""

    assertion: VerifiedAssertion
    signer: x509.Certificate
    action: str
    message_id: str
    payload: etree._Element  # the first child of the signed Body
    expires: dt.datetime


def verify_request(
    envelope: etree._Element,
    *,
    ca_pem_file: str | Path | list[str],
    issuers: tuple[str, ...] | list[str],
    audience: str,
    now: dt.datetime | None = None,
    clock_skew: dt.timedelta = dt.timedelta(seconds=60),
) -> SecurityContext:
    """Verify the wsse:Security header of ``envelope``; AssertionRejected with the reason otherwise."""
    now = now or dt.datetime.now(dt.UTC)
    header = envelope.find(_ENV + "Header")
    securities = header.findall(_WSSE + "Security") if header is not None else []
    if len(securities) != 1:
        raise AssertionRejected(f"expected one wsse:Security header, found {len(securities)}")
    security = securities[0]
    bodies = envelope.findall(_ENV + "Body")
    if len(bodies) != 1:
        raise AssertionRejected("the envelope must have exactly one Body")

    timestamps = security.findall(_WSU + "Timestamp")
    if len(timestamps) != 1:
        raise AssertionRejected("wsse:Security must hold exactly one wsu:Timestamp")
    assertions = security.findall(f"{{{NS_SAML}}}Assertion")
    if len(assertions) != 1:
        raise AssertionRejected(
            "wsse:Security must hold exactly one SAML assertion", "wsse:InvalidSecurityToken"
        )
    signatures = security.findall(f"{{{NS_DS}}}Signature")
    if len(signatures) != 1:
        raise AssertionRejected("wsse:Security must hold exactly one message signature", "wsse:FailedCheck")
    verified = verify_assertion(
        assertions[0],
        ca_pem_file=ca_pem_file,
        issuers=issuers,
        audience=audience,
        now=now,
        clock_skew=clock_skew,
    )

    # Verify the message signature on a copy from which every other signature and the assertion are
    # gone: signxml then sees exactly the one signature that belongs to the message.
    work = copy.deepcopy(envelope)
    work_security = work.find(_ENV + "Header").find(_WSSE + "Security")  # type: ignore[union-attr]
    keep = work_security.find(f"{{{NS_DS}}}Signature")
    for other in list(work.iter(f"{{{NS_DS}}}Signature")):
        if other is not keep:
            other.getparent().remove(other)
    for token in work_security.findall(f"{{{NS_SAML}}}Assertion"):
        work_security.remove(token)
    uris = [ref.get("URI", "") for ref in keep.iter(f"{{{NS_DS}}}Reference")]
    if not uris:
        raise AssertionRejected("the message signature has no references", "wsse:FailedCheck")
    leaf, chain = _certificates(keep)
    try:
        verify_chain(leaf, chain, ca_pem_file)
        results = XMLVerifier().verify(work, x509_cert=leaf, expect_references=len(uris), id_attribute="Id")
    except (InvalidSignature, InvalidInput, VerificationError) as exc:
        raise AssertionRejected(f"message signature is not valid: {exc}", "wsse:FailedCheck") from None
    results = results if isinstance(results, list) else [results]
    signed: dict[str, etree._Element] = {}
    for result in results:
        el = result.signed_xml
        if el is None:
            continue
        local = etree.QName(el).localname
        if local in signed:
            raise AssertionRejected(f"the message signature covers two {local} elements", "wsse:FailedCheck")
        signed[local] = el
    for needed in ("Body", "Timestamp", "Action", "MessageID"):
        if needed not in signed:
            raise AssertionRejected(f"the message signature does not cover {needed}", "wsse:FailedCheck")
    if signed["Body"].tag != _ENV + "Body" or signed["Timestamp"].tag != _WSU + "Timestamp":
        raise AssertionRejected(
            "the signed Body or Timestamp is not the SOAP/WS-Security one", "wsse:FailedCheck"
        )
    # the signed elements must be the ones the message actually uses
    if signed["Body"].get(_WSU + "Id") != bodies[0].get(_WSU + "Id"):
        raise AssertionRejected("the signed Body is not the envelope's Body", "wsse:FailedCheck")
    if signed["Timestamp"].get(_WSU + "Id") != timestamps[0].get(_WSU + "Id"):
        raise AssertionRejected("the signed Timestamp is not the Security header's", "wsse:FailedCheck")

    created = _time(signed["Timestamp"].findtext(_WSU + "Created"), "Created")
    expires = _time(signed["Timestamp"].findtext(_WSU + "Expires"), "Expires")
    if now + clock_skew < created:
        raise AssertionRejected("the message Timestamp is in the future", "wsse:MessageExpired")
    if now - clock_skew >= expires:
        raise AssertionRejected("the message has expired (wsu:Expires has passed)", "wsse:MessageExpired")
    payload = next((c for c in signed["Body"] if isinstance(c.tag, str)), None)
    if payload is None:
        raise AssertionRejected("the signed Body is empty", "wsse:FailedCheck")
    return SecurityContext(
        assertion=verified,
        signer=leaf,
        action=(signed["Action"].text or "").strip(),
        message_id=(signed["MessageID"].text or "").strip(),
        payload=payload,
        expires=min(expires, verified.not_on_or_after),
    )


def _time(value: str | None, what: str) -> dt.datetime:
    if not value:
        raise AssertionRejected(f"wsu:Timestamp has no {what}")
    try:
        return dt.datetime.strptime(value.strip()[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        raise AssertionRejected(f"wsu:{what} {value!r} is not an xs:dateTime") from None
