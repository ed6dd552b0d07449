"""Detached XML Signatures over elements of a SOAP message, as WS-Security uses them.

W3C XML-Signature 1.1 with the choices of the WS-I Basic Security Profile 1.1: exclusive C14N for
SignedInfo and every reference (BSP R5404, R5412), references by ``#id`` to elements of the same
message (``wsu:Id``, ``Id`` or the SAML ``ID``), RSA or ECDSA with SHA-256 or stronger — SHA-1 is
refused.

MTOM (W3C XOP): an element whose content travels as an ``xop:Include``'d MIME part is digested as
its XOP infoset, the part's bytes as base64 text in place of the ``xop:Include`` — what a WS-Security
stack signs when it signs before optimising (WS-Security's MTOM handling; WSS4J's
``expandXOPInclude``). The base64 is produced and hashed while the part streams from its file, so
a document is never held in memory.

Verification returns the elements that were digested, by reference order, so the caller believes
only what was signed.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree

from xds.soap.mtom import normalize_cid

NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_EC = "http://www.w3.org/2001/10/xml-exc-c14n#"
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
_DS = "{" + NS_DS + "}"

DIGESTS = {
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
SIGNATURES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512()),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256()),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384()),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": ("ec", hashes.SHA512()),
}
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ID_ATTRIBUTES = ("{" + NS_WSU + "}Id", "Id", "ID")
_WITH_ID = etree.XPath("//*[@wsu:Id or @Id or @ID]", namespaces={"wsu": NS_WSU})
_ID_ATTRIBUTES = ("{" + NS_WSU + "}Id", "Id", "ID")
MAX_REFERENCES = 64  # bounded work for a hostile message
_CHUNK = 3 * 256 * 1024  # a multiple of 3: base64 of the chunks joins into base64 of the whole


class SignatureInvalid(Exception):
    """The signature does not hold; the message says why."""


class Part(Protocol):
    """An MTOM part: its bytes can be read from the start (xds.soap.envelope.Attachment)."""

    def open(self) -> BinaryIO: ...


def base64_value(text: str | None, what: str) -> bytes:
    """The bytes of a base64 element (whitespace allowed); SignatureInvalid when it is not base64."""
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except ValueError:
        raise SignatureInvalid(f"{what} is not base64") from None


def _canonical(el: etree._Element, prefixes: Sequence[str] = ()) -> bytes:
    return etree.tostring(
        el, method="c14n", exclusive=True, with_comments=False, inclusive_ns_prefixes=list(prefixes) or None
    )


def _b64_stream(part: Part, update: Callable[[bytes], None]) -> None:
    rest = b""
    with part.open() as fh:
        while chunk := fh.read(_CHUNK):
            chunk = rest + chunk
            cut = len(chunk) - len(chunk) % 3
            update(base64.b64encode(chunk[:cut]))
            rest = chunk[cut:]
    if rest:
        update(base64.b64encode(rest))


def digest(
    el: etree._Element, algorithm: str, prefixes: Sequence[str] = (), parts: Mapping[str, Part] | None = None
) -> bytes:
    """The digest of ``el``'s exclusive canonical form; ``xop:Include``s read as their parts' base64."""
    h = hashlib.new(DIGESTS[algorithm])
    includes = list(el.iter("{" + NS_XOP + "}Include"))
    if not includes:
        h.update(_canonical(el, prefixes))
        return h.digest()
    if parts is None:
        raise SignatureInvalid("a signed element refers to MTOM parts that are not available")
    marks: list[tuple[bytes, Part]] = []
    undo: list[tuple[etree._Element, etree._Element, str | None]] = []
    try:
        for include in includes:
            parent = include.getparent()
            cid = _cid(include.get("href", ""))
            if cid not in parts or parent is None or len(parent) != 1 or (parent.text or "").strip():
                raise SignatureInvalid(f"xop:Include of cid:{cid} is not one whole part of this message")
            mark = f"xopmark{uuid.uuid4().hex}"
            undo.append((parent, include, parent.text))
            parent.remove(include)
            parent.text = mark
            marks.append((mark.encode(), parts[cid]))
        canonical = _canonical(el, prefixes)
    finally:
        for parent, include, text in reversed(undo):
            parent.text = text
            parent.append(include)
    for mark, part in marks:
        before, _, canonical = canonical.partition(mark)
        h.update(before)
        _b64_stream(part, h.update)
    h.update(canonical)
    return h.digest()


def _cid(href: str) -> str:
    """The Content-ID an xop:Include names, read as every reader of the message reads it: the part
    digested is the part stored or passed on."""
    return normalize_cid(href)


def sign(
    elements: Sequence[etree._Element],
    key: PrivateKeyTypes,
    key_info: etree._Element,
    *,
    parts: Mapping[str, Part] | None = None,
    signature_id: str = "",
) -> etree._Element:
    """A ds:Signature over ``elements`` (each carrying an id attribute), to be placed by the caller.

    The caller inserts the returned element into the document afterwards; the references are by id,
    so the signature does not depend on where it stands.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        method = RSA_SHA256
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        method = ECDSA_SHA256
    else:
        raise ValueError("signing needs an RSA or EC private key")
    signature = etree.Element(_DS + "Signature", nsmap={"ds": NS_DS})
    if signature_id:
        signature.set("Id", signature_id)
    info = etree.SubElement(signature, _DS + "SignedInfo")
    etree.SubElement(info, _DS + "CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(info, _DS + "SignatureMethod", Algorithm=method)
    for el in elements:
        ident = next((el.get(a) for a in ID_ATTRIBUTES if el.get(a)), None)
        if not ident:
            raise ValueError(f"{el.tag} has no id to refer to")
        ref = etree.SubElement(info, _DS + "Reference", URI="#" + ident)
        etree.SubElement(etree.SubElement(ref, _DS + "Transforms"), _DS + "Transform", Algorithm=EXC_C14N)
        etree.SubElement(ref, _DS + "DigestMethod", Algorithm=SHA256)
        etree.SubElement(ref, _DS + "DigestValue").text = base64.b64encode(
            digest(el, SHA256, parts=parts)
        ).decode()
    data = _canonical(info)
    if isinstance(key, rsa.RSAPrivateKey):
        value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        value = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    etree.SubElement(signature, _DS + "SignatureValue").text = base64.b64encode(value).decode()
    signature.append(key_info)
    return signature


IdIndex = dict[str, list[etree._Element]]


def id_index(root: etree._Element) -> IdIndex:
    """Every element of ``root``'s document by each id it has (wsu:Id, Id, ID), read in one pass."""
    index: IdIndex = {}
    for element in _WITH_ID(root.getroottree()):
        for name in {element.get(a) for a in _ID_ATTRIBUTES} - {None}:
            index.setdefault(name, []).append(element)  # type: ignore[arg-type]
    return index


def resolve(root: etree._Element, ident: str, index: IdIndex | None = None) -> etree._Element:
    """The one element of ``root``'s document whose id is ``ident``; two or none is refused."""
    found = (index if index is not None else id_index(root)).get(ident, [])
    if len(found) != 1:
        raise SignatureInvalid(
            f"Ambiguous reference: #{ident} names {len(found)} elements"
            if found
            else f"no element has id {ident}"
        )
    return found[0]


def _prefixes(transform: etree._Element) -> list[str]:
    inclusive = transform.find("{" + NS_EC + "}InclusiveNamespaces")
    return (inclusive.get("PrefixList") or "").split() if inclusive is not None else []


ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"


def verify(
    signature: etree._Element,
    public_key: PublicKeyTypes,
    *,
    parts: Mapping[str, Part] | None = None,
    enveloped: etree._Element | None = None,
) -> list[etree._Element]:
    """Check ``signature`` with ``public_key``; the referenced elements, in order, when it holds.

    ``enveloped``: the element the signature stands in (a SAML assertion), which its reference may
    digest with the enveloped-signature transform (the signature taken out).
    """
    info = signature.find(_DS + "SignedInfo")
    value_el = signature.find(_DS + "SignatureValue")
    if info is None or value_el is None:
        raise SignatureInvalid("the signature has no SignedInfo or SignatureValue")
    c14n = info.find(_DS + "CanonicalizationMethod")
    method_el = info.find(_DS + "SignatureMethod")
    if c14n is None or c14n.get("Algorithm") != EXC_C14N:
        raise SignatureInvalid("SignedInfo must be canonicalised with exclusive C14N")
    method = SIGNATURES.get(method_el.get("Algorithm", "") if method_el is not None else "")
    if method is None:
        raise SignatureInvalid(
            f"signature method {method_el.get('Algorithm') if method_el is not None else None} is not "
            "RSA or ECDSA with SHA-256 or stronger"
        )
    references = info.findall(_DS + "Reference")
    if len(references) > MAX_REFERENCES:
        raise SignatureInvalid(f"the signature has {len(references)} references; at most {MAX_REFERENCES}")
    _check_value(info, c14n, value_el, public_key, method)
    signed = []
    index = id_index(signature)
    for ref in references:
        uri = ref.get("URI", "")
        if not uri.startswith("#") or len(uri) < 2:
            raise SignatureInvalid(f"reference {uri!r} is not to an element of this message")
        target = resolve(signature, uri[1:], index)
        prefixes: list[str] = []
        cut = False
        for transform in ref.iterfind(f"{_DS}Transforms/{_DS}Transform"):
            if transform.get("Algorithm") == ENVELOPED and target is enveloped and not cut and not prefixes:
                cut = True
                continue
            if transform.get("Algorithm") != EXC_C14N:
                raise SignatureInvalid(f"transform {transform.get('Algorithm')} is not exclusive C14N")
            prefixes = _prefixes(transform)
        algorithm = ref.find(_DS + "DigestMethod")
        name = algorithm.get("Algorithm", "") if algorithm is not None else ""
        if name not in DIGESTS:
            raise SignatureInvalid(f"digest method {name or None} is not SHA-256 or stronger")
        expected = base64_value(ref.findtext(_DS + "DigestValue"), "DigestValue")
        if _digest_reference(target, name, prefixes, parts, signature if cut else None) != expected:
            raise SignatureInvalid(f"the digest of {uri} does not match: the element was altered")
        signed.append(target)
    if not signed:
        raise SignatureInvalid("the signature has no references")
    return signed


def _digest_reference(
    target: etree._Element,
    algorithm: str,
    prefixes: list[str],
    parts: Mapping[str, Part] | None,
    cut: etree._Element | None,
) -> bytes:
    if cut is None:
        return digest(target, algorithm, prefixes, parts)
    parent = cut.getparent()
    if parent is None:
        raise SignatureInvalid("the enveloped signature has no place in the signed element")
    # the transform takes out the Signature element, not the text after it (lxml moves tails along)
    index, tail, previous = parent.index(cut), cut.tail, cut.getprevious()
    before = previous.tail if previous is not None else parent.text
    joined = (before or "") + (tail or "") or None
    parent.remove(cut)
    if previous is not None:
        previous.tail = joined
    else:
        parent.text = joined
    try:
        return digest(target, algorithm, prefixes, parts)
    finally:
        if previous is not None:
            previous.tail = before
        else:
            parent.text = before
        parent.insert(index, cut)
        cut.tail = tail


def _check_value(
    info: etree._Element,
    c14n: etree._Element,
    value_el: etree._Element,
    public_key: PublicKeyTypes,
    method: tuple[str, hashes.HashAlgorithm],
) -> None:
    data = _canonical(info, _prefixes(c14n))
    value = base64_value(value_el.text, "SignatureValue")
    kind, algorithm = method
    try:
        if kind == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(value, data, padding.PKCS1v15(), algorithm)
        elif kind == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
            half = len(value) // 2
            der = encode_dss_signature(
                int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big")
            )
            public_key.verify(der, data, ec.ECDSA(algorithm))
        else:
            raise SignatureInvalid("the signature method does not fit the signer's key")
    except InvalidSignature:
        raise SignatureInvalid("the signature value does not match SignedInfo") from None
