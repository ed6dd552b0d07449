"""WS-Security for IHE SOAP messages: the requesting side signs, the responding side verifies.

OASIS WS-Security 1.1 (SOAP Message Security) with the X.509 and SAML Token Profiles, as ITI TF-2
§3.40.4.1.2 (XUA) carries the assertion: a ``wsse:Security`` header holding a ``wsu:Timestamp``,
the signed XUA assertion, the sending institution's certificate as a ``wsse:BinarySecurityToken``
and its signature over the Body, the Timestamp, the assertion and the WS-Addressing headers
(Action, MessageID, To, RelatesTo) — RSA-SHA256 or ECDSA-SHA256, exclusive C14N
(:mod:`xds.trust.xmldsig`). MTOM parts are signed as their XOP infoset (the Body as if each document
were inline base64), so an altered part fails verification both ways.

:class:`MessageSigner` secures an outgoing request or answer; :func:`verify_answer` checks what
came back; :func:`verify_request` is the responding side. Verification believes only what was
signed: the payload handed on is the Body the signature covered, the Action, MessageID and To the
signed ones. The signer's certificate is read from any standard form (:mod:`xds.trust.tokens`) — a
BinarySecurityToken (X509v3, X509PKIPathv1, PKCS7) by direct reference, a key identifier (subject
key identifier, SHA-1 thumbprint), issuer and serial number, or ds:X509Data —
and must chain to the institutions' anchors; assertion issuers are pinned to their own
certificates (:func:`xds.trust.assertion.verify_assertion`). The roles never mix.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from xds import safexml
from xds.metadata import vocabulary as v
from xds.trust import tokens, xmldsig
from xds.trust.assertion import (
    DEFAULT_AUDIENCE,
    NS_DS,
    NS_SAML,
    AssertionRejected,
    TrustAttributes,
    VerifiedAssertion,
    build_assertion,
    sign_assertion,
    verify_assertion,
    xs_datetime,
)
from xds.trust.keys import TrustAnchors, UntrustedCertificate, private_key

NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = xmldsig.NS_WSU
NS_WSSE11 = "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd"
TOKEN_PROFILE = tokens.TOKEN_PROFILE
X509V3 = tokens.X509V3
SKI = tokens.SKI
THUMBPRINT = tokens.THUMBPRINT
BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
_ENV = "{" + v.NS_SOAP12 + "}"
_WSA = "{" + v.NS_WSA + "}"
_WSSE = "{" + NS_WSSE + "}"
_WSU = "{" + NS_WSU + "}"
_DS = "{" + NS_DS + "}"
_SIGNED_HEADERS = ("Action", "MessageID", "To", "RelatesTo")
Parts = Mapping[str, xmldsig.Part]


def _instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MessageSigner:
    """Secures outgoing SOAP envelopes for one institution (requests, answers, faults).

    ``key_pem``/``cert_pem`` are the institution's signing identity; ``assertion`` the signed XUA
    assertion to carry (a request), or None (an answer). One assertion serves many requests in its
    lifetime. Use :meth:`with_attributes` to have an identity provider's key make one.
    """

    def __init__(
        self,
        key_pem: bytes,
        cert_pem: bytes,
        *,
        assertion: etree._Element | None = None,
        lifetime: dt.timedelta = dt.timedelta(minutes=5),
    ) -> None:
        self.key = private_key(key_pem)  # loaded once per process, however many signers use it
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        self.assertion = assertion
        self.lifetime = lifetime

    @classmethod
    def with_attributes(
        cls,
        key_pem: bytes,
        cert_pem: bytes,
        attributes: TrustAttributes,
        *,
        idp_key_pem: bytes,
        idp_cert_pem: bytes,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        assertion_lifetime: dt.timedelta = dt.timedelta(hours=1),
    ) -> MessageSigner:
        """A signer carrying a new assertion for ``attributes``, signed by the identity provider's key."""
        token = build_assertion(attributes, issuer=issuer, audience=audience, lifetime=assertion_lifetime)
        return cls(key_pem, cert_pem, assertion=sign_assertion(token, idp_key_pem, idp_cert_pem))

    def secure(self, envelope: bytes, *, parts: Parts | None = None, now: dt.datetime | None = None) -> bytes:
        """``envelope`` with a wsse:Security header: Timestamp, token(s) and the signature.

        ``parts``: the MTOM parts the Body's ``xop:Include``s name (by Content-ID), signed as inline.
        """
        now = now or dt.datetime.now(dt.UTC)
        root = safexml.parse(envelope)
        header = root.find(_ENV + "Header")
        if header is None:
            header = etree.Element(_ENV + "Header")
            root.insert(0, header)
        body = root.find(_ENV + "Body")
        if body is None:
            raise ValueError("the envelope has no Body")
        security = etree.SubElement(
            header,
            _WSSE + "Security",
            {_ENV + "mustUnderstand": "true"},
            nsmap={"wsse": NS_WSSE, "wsu": NS_WSU},
        )
        timestamp = etree.SubElement(security, _WSU + "Timestamp", {_WSU + "Id": f"TS-{uuid.uuid4().hex}"})
        etree.SubElement(timestamp, _WSU + "Created").text = _instant(now)
        etree.SubElement(timestamp, _WSU + "Expires").text = _instant(now + self.lifetime)
        token_id = f"X509-{uuid.uuid4().hex}"
        bst = etree.SubElement(
            security,
            _WSSE + "BinarySecurityToken",
            {_WSU + "Id": token_id, "ValueType": X509V3, "EncodingType": BASE64},
        )
        bst.text = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        covered = [body, timestamp]
        if self.assertion is not None:
            token = etree.fromstring(etree.tostring(self.assertion))
            security.append(token)
            covered.append(token)
        for name in _SIGNED_HEADERS:
            for el in header.findall(_WSA + name):
                covered.append(el)
        for el in covered:
            if not any(el.get(a) for a in xmldsig.ID_ATTRIBUTES):
                el.set(_WSU + "Id", f"id-{uuid.uuid4().hex}")
        key_info = etree.Element(_DS + "KeyInfo")
        reference = etree.SubElement(
            etree.SubElement(key_info, _WSSE + "SecurityTokenReference"), _WSSE + "Reference"
        )
        reference.set("URI", "#" + token_id)
        reference.set("ValueType", X509V3)
        security.append(xmldsig.sign(covered, self.key, key_info, parts=parts))
        return etree.tostring(root)


def secure_request(
    envelope: bytes,
    *,
    assertion: etree._Element,
    key_pem: bytes,
    cert_pem: bytes,
    lifetime: dt.timedelta = dt.timedelta(minutes=5),
    now: dt.datetime | None = None,
    parts: Parts | None = None,
) -> bytes:
    """``envelope`` with a wsse:Security header: Timestamp, the assertion, the institution's signature."""
    signer = MessageSigner(key_pem, cert_pem, assertion=assertion, lifetime=lifetime)
    return signer.secure(envelope, parts=parts, now=now)


def secure_response(
    envelope: bytes,
    *,
    key_pem: bytes,
    cert_pem: bytes,
    lifetime: dt.timedelta = dt.timedelta(minutes=5),
    parts: Parts | None = None,
) -> bytes:
    """An answer (or fault) signed by the responding institution: Body, Timestamp, addressing headers."""
    return MessageSigner(key_pem, cert_pem, lifetime=lifetime).secure(envelope, parts=parts)


# --------------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustRoles:
    """What a verifier believes, one role apart from the other.

    ``institutions``: anchors for message signatures (``[trust] ca_file`` and the communities');
    ``issuers``: each allowed assertion issuer pinned to its certificate(s) (``[[trust.issuer]]``);
    ``audiences``: the names this deployment answers to in an assertion's AudienceRestriction.
    """

    institutions: TrustAnchors
    issuers: Mapping[str, Sequence[x509.Certificate]] = field(default_factory=dict)
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    clock_skew: dt.timedelta = dt.timedelta(seconds=60)
    max_timestamp_lifetime: dt.timedelta = dt.timedelta(minutes=10)
    max_assertion_lifetime: dt.timedelta = dt.timedelta(hours=8)


@dataclass(frozen=True)
class SecurityContext:
    """Who asked, why, for whom — and what exactly they signed."""

    assertion: VerifiedAssertion
    signer: x509.Certificate
    action: str
    message_id: str
    to: str | None  # the signed wsa:To, if the message had one
    payload: etree._Element  # the first child of the signed Body
    expires: dt.datetime  # the message's Timestamp Expires
    replay_key: str  # what identifies the message for replay detection
    signer_chain: tuple[x509.Certificate, ...] = ()
    token: etree._Element | None = None  # the signed assertion as received (to forward, e.g. ITI-42)


# The verified assertion of the request being handled (set by the enforcement point, read by an actor
# that forwards the request's authority, e.g. a repository's remote ITI-42).
REQUEST_ASSERTION: ContextVar[etree._Element | None] = ContextVar("xds_request_assertion", default=None)


@dataclass
class _Verified:
    signer: x509.Certificate
    chain: list[x509.Certificate]
    signed: dict[str, etree._Element]
    created: dt.datetime
    expires: dt.datetime


def _security_header(envelope: etree._Element) -> etree._Element:
    header = envelope.find(_ENV + "Header")
    securities = header.findall(_WSSE + "Security") if header is not None else []
    if len(securities) != 1:
        raise AssertionRejected(f"expected one wsse:Security header, found {len(securities)}")
    if len(envelope.findall(_ENV + "Body")) != 1:
        raise AssertionRejected("the envelope must have exactly one Body")
    return securities[0]


def _der(text: str | None) -> x509.Certificate:
    return _token(X509V3, text)[0]


def _token(value_type: str, text: str | None) -> list[x509.Certificate]:
    """The certificates of one X.509 token, the signer's first."""
    try:
        return tokens.certificates(value_type, xmldsig.base64_value(text, "the certificate"))
    except (tokens.TokenError, xmldsig.SignatureInvalid):
        raise AssertionRejected(
            "the signer's certificate cannot be read", "wsse:InvalidSecurityToken"
        ) from None


def _offered(
    security: etree._Element, key_info: etree._Element, known: Sequence[x509.Certificate]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """What this message or its connection offers for a reference by identifier: the certificates
    a reference may name (each token's signer, each ds:X509Certificate, the TLS client's), and
    every certificate offered (the tokens' whole chains too), as intermediates for the path."""
    named: list[x509.Certificate] = []
    every: list[x509.Certificate] = []
    for bst in security.findall(_WSSE + "BinarySecurityToken"):
        if bst.get("ValueType", X509V3) in tokens.TOKEN_TYPES:
            chain = _token(bst.get("ValueType", X509V3), bst.text)
            named.append(chain[0])
            every += chain
    in_key_info = [_der(cert.text) for cert in key_info.iter(_DS + "X509Certificate")]
    named += in_key_info + list(known[:1])
    every += in_key_info + list(known)
    return named, every


def _with_path(
    signer: x509.Certificate, every: list[x509.Certificate]
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    return signer, [c for c in every if c != signer]


def _by_key_identifier(
    identifier: etree._Element, candidates: Iterable[x509.Certificate]
) -> x509.Certificate:
    kind = identifier.get("ValueType", "")
    if kind == X509V3:
        return _der(identifier.text)
    try:
        value = xmldsig.base64_value(identifier.text, "the key identifier")
    except xmldsig.SignatureInvalid as exc:
        raise AssertionRejected(str(exc), "wsse:InvalidSecurityToken") from None
    found = tokens.by_key_identifier(kind, value, candidates)
    if found is None:
        raise AssertionRejected(
            f"the key identifier ({kind or 'no ValueType'}) names no certificate sent with the message",
            "wsse:SecurityTokenUnavailable",
        )
    return found


def _by_issuer_serial(reference: etree._Element, candidates: Iterable[x509.Certificate]) -> x509.Certificate:
    issuer = reference.findtext(_DS + "X509IssuerName") or ""
    serial = reference.findtext(_DS + "X509SerialNumber") or ""
    found = tokens.by_issuer_serial(issuer, serial, candidates)
    if found is None:
        raise AssertionRejected(
            f"the issuer and serial number ({issuer.strip()!r}, {serial.strip()}) name no certificate "
            "sent with the message or presented on the connection",
            "wsse:SecurityTokenUnavailable",
        )
    return found


def _signer_certificate(
    signature: etree._Element, security: etree._Element, known: Sequence[x509.Certificate] = ()
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The signer's certificate from the signature's KeyInfo, in any of the standard forms
    (:mod:`xds.trust.tokens`); ``known``: certificates the connection presented (TLS client)."""
    key_info = signature.find(_DS + "KeyInfo")
    if key_info is None:
        raise AssertionRejected("the message signature has no KeyInfo", "wsse:InvalidSecurityToken")
    reference = key_info.find(f"{_WSSE}SecurityTokenReference/{_WSSE}Reference")
    identifier = key_info.find(f"{_WSSE}SecurityTokenReference/{_WSSE}KeyIdentifier")
    issuer_serial = key_info.find(f".//{_DS}X509Data/{_DS}X509IssuerSerial")
    certificates = key_info.findall(f"{_DS}X509Data/{_DS}X509Certificate")
    if reference is not None:
        uri = reference.get("URI", "")
        found = [
            t
            for t in security.findall(_WSSE + "BinarySecurityToken")
            if "#" + (t.get(_WSU + "Id") or "") == uri
        ]
        if len(found) != 1 or found[0].get("ValueType", X509V3) not in tokens.TOKEN_TYPES:
            raise AssertionRejected(
                f"the token reference {uri!r} names no X.509 BinarySecurityToken",
                "wsse:SecurityTokenUnavailable",
            )
        chain = _token(found[0].get("ValueType", X509V3), found[0].text)
        return chain[0], chain[1:]
    if identifier is not None:
        named, every = _offered(security, key_info, known)
        return _with_path(_by_key_identifier(identifier, named), every)
    if certificates:
        certs = [_der(c.text) for c in certificates]
        return certs[0], certs[1:]
    if issuer_serial is not None:
        named, every = _offered(security, key_info, known)
        return _with_path(_by_issuer_serial(issuer_serial, named), every)
    raise AssertionRejected("the signature's KeyInfo names no certificate", "wsse:InvalidSecurityToken")


def _classify(
    signed: list[etree._Element], envelope: etree._Element, security: etree._Element
) -> dict[str, etree._Element]:
    """Name each signed element by the place it has in this message; the same place twice is refused."""
    header = envelope.find(_ENV + "Header")
    named: dict[str, etree._Element] = {}
    for el in signed:
        if el.getparent() is envelope and el.tag == _ENV + "Body":
            name = "Body"
        elif el.getparent() is security and el.tag == _WSU + "Timestamp":
            name = "Timestamp"
        elif el.getparent() is security and el.tag == f"{{{NS_SAML}}}Assertion":
            name = "Assertion"
        elif el.getparent() is header and el.tag.startswith(_WSA):
            name = etree.QName(el).localname
        else:
            continue  # signed, but nothing this message is believed by
        if name in named:
            raise AssertionRejected(f"the message signature covers two {name} elements", "wsse:FailedCheck")
        named[name] = el
    return named


def _verify_message(
    envelope: etree._Element,
    security: etree._Element,
    anchors: TrustAnchors,
    *,
    needed: Sequence[str],
    parts: Parts | None,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    max_lifetime: dt.timedelta,
    known: Sequence[x509.Certificate] = (),
) -> _Verified:
    signatures = security.findall(_DS + "Signature")
    if len(signatures) != 1:
        raise AssertionRejected("wsse:Security must hold exactly one message signature", "wsse:FailedCheck")
    timestamps = security.findall(_WSU + "Timestamp")
    if len(timestamps) != 1:
        raise AssertionRejected("wsse:Security must hold exactly one wsu:Timestamp")
    leaf, intermediates = _signer_certificate(signatures[0], security, known)
    try:
        chain = anchors.verify(leaf, intermediates)
        signed = xmldsig.verify(signatures[0], leaf.public_key(), parts=parts)
    except (UntrustedCertificate, xmldsig.SignatureInvalid) as exc:
        raise AssertionRejected(f"message signature is not valid: {exc}", "wsse:FailedCheck") from None
    named = _classify(signed, envelope, security)
    for name in needed:
        if name not in named:
            raise AssertionRejected(f"the message signature does not cover {name}", "wsse:FailedCheck")
    header = envelope.find(_ENV + "Header")
    for name in _SIGNED_HEADERS:
        if header is not None and header.find(_WSA + name) is not None and name not in named:
            raise AssertionRejected(f"wsa:{name} is present but not signed", "wsse:FailedCheck")
    created = xs_datetime(named["Timestamp"].findtext(_WSU + "Created"), "wsu:Created")
    # Expires is optional in WS-Security (§10): without it the message lives the longest allowed
    given = named["Timestamp"].findtext(_WSU + "Expires")
    expires = xs_datetime(given, "wsu:Expires") if given is not None else created + max_lifetime
    if expires - created > max_lifetime:
        raise AssertionRejected(
            f"the Timestamp's lifetime {expires - created} exceeds the {max_lifetime} allowed",
            "wsse:MessageExpired",
        )
    if now + clock_skew < created:
        raise AssertionRejected("the message Timestamp is in the future", "wsse:MessageExpired")
    if now - clock_skew >= expires:
        raise AssertionRejected("the message has expired (wsu:Expires has passed)", "wsse:MessageExpired")
    return _Verified(leaf, chain, named, created, expires)


def verify_request(
    envelope: etree._Element,
    *,
    trust: TrustRoles,
    parts: Parts | None = None,
    now: dt.datetime | None = None,
    connection_certificates: Sequence[x509.Certificate] = (),
) -> SecurityContext:
    """Verify the wsse:Security header of ``envelope``; AssertionRejected with the reason otherwise.

    ``connection_certificates``: the TLS client certificate chain of the connection, against which
    a signature's issuer-serial or key-identifier reference may be resolved when the message itself
    carries no certificate (WSS X.509 Token Profile 1.1 §3.2)."""
    now = now or dt.datetime.now(dt.UTC)
    security = _security_header(envelope)
    assertions = security.findall(f"{{{NS_SAML}}}Assertion")
    if len(assertions) != 1:
        raise AssertionRejected(
            "wsse:Security must hold exactly one SAML assertion", "wsse:InvalidSecurityToken"
        )
    verified = verify_assertion(
        assertions[0],
        issuers=trust.issuers,
        audience=trust.audiences,
        now=now,
        clock_skew=trust.clock_skew,
        max_lifetime=trust.max_assertion_lifetime,
    )
    message = _verify_message(
        envelope,
        security,
        trust.institutions,
        needed=("Body", "Timestamp", "Action", "MessageID"),
        parts=parts,
        now=now,
        clock_skew=trust.clock_skew,
        max_lifetime=trust.max_timestamp_lifetime,
        known=connection_certificates,
    )
    signed = message.signed
    payload = next((c for c in signed["Body"] if isinstance(c.tag, str)), None)
    if payload is None:
        raise AssertionRejected("the signed Body is empty", "wsse:FailedCheck")
    message_id = (signed["MessageID"].text or "").strip()
    return SecurityContext(
        assertion=verified,
        signer=message.signer,
        action=(signed["Action"].text or "").strip(),
        message_id=message_id,
        to=(signed["To"].text or "").strip() if "To" in signed else None,
        payload=payload,
        expires=message.expires,
        replay_key=f"message:{message_id}",
        signer_chain=tuple(message.chain),
        token=assertions[0],
    )


def verify_answer(
    envelope: etree._Element,
    *,
    anchors: TrustAnchors | str | Path | list[str],
    relates_to: str | None = None,
    parts: Parts | None = None,
    now: dt.datetime | None = None,
    clock_skew: dt.timedelta = dt.timedelta(seconds=60),
    max_lifetime: dt.timedelta = dt.timedelta(minutes=10),
) -> x509.Certificate:
    """The responding institution's certificate, once its signature over the answer holds.

    The signature must cover the Body (with its MTOM parts), the Timestamp (in its window) and the
    RelatesTo naming our request when ``relates_to`` is given.
    """
    if not isinstance(anchors, TrustAnchors):
        anchors = TrustAnchors([str(anchors)] if isinstance(anchors, str | Path) else anchors)
    security = _security_header(envelope)
    message = _verify_message(
        envelope,
        security,
        anchors,
        needed=("Body", "Timestamp") + (("RelatesTo",) if relates_to is not None else ()),
        parts=parts,
        now=now or dt.datetime.now(dt.UTC),
        clock_skew=clock_skew,
        max_lifetime=max_lifetime,
    )
    if relates_to is not None and (message.signed["RelatesTo"].text or "").strip() != relates_to:
        raise AssertionRejected("the answer's signed RelatesTo is not our request", "wsse:FailedCheck")
    return message.signer


def verify_response(
    envelope: etree._Element, *, ca_pem_file: str | Path | list[str], relates_to: str | None = None
) -> x509.Certificate:
    """:func:`verify_answer` under the anchors of one PEM file (or several)."""
    return verify_answer(envelope, anchors=ca_pem_file, relates_to=relates_to)


class SecureChannel:
    """A client's WS-Security: requests signed by ``signer``, answers verified under ``anchors``.

    It is what :class:`xds.client.RepositoryClient` (and any other SOAP client) is handed: with
    ``anchors`` every answer must be signed by an institution chaining to them, its Timestamp in
    its window, its RelatesTo our request and its MTOM parts unaltered; without, answers are read
    unverified.
    """

    def __init__(self, signer: MessageSigner, anchors: TrustAnchors | None = None) -> None:
        self.signer = signer
        self.anchors = anchors

    def secure(self, envelope: bytes, *, parts: Parts | None = None) -> bytes:
        return self.signer.secure(envelope, parts=parts)

    def verify_answer(
        self, envelope: etree._Element, *, relates_to: str | None = None, parts: Parts | None = None
    ) -> None:
        """Raise :class:`AssertionRejected` unless the answer is signed as it must be."""
        if self.anchors is not None:
            verify_answer(envelope, anchors=self.anchors, relates_to=relates_to, parts=parts)
