"""X.509 security tokens and references to them, as the WS-Security X.509 Token Profile 1.1 defines.

A signer's certificate reaches a verifier in one of these forms (OASIS WSS X.509 Token Profile 1.1
§3.1 token types, §3.2 token references):

- a ``wsse:BinarySecurityToken`` of ValueType ``#X509v3`` (one DER certificate), ``#X509PKIPathv1``
  (a DER ``PkiPath``: SEQUENCE OF Certificate, ordered from the trust anchor's side to the signer,
  so the signer's certificate is last) or ``#PKCS7`` (a degenerate PKCS#7 SignedData holding the
  certificates in no stated order);
- a reference to a certificate by issuer name and serial number (``ds:X509IssuerSerial``, the
  default of Apache WSS4J and so of CXF- and IPF-based clients), by subject key identifier or by
  SHA-1 thumbprint. Such a reference is resolved only against certificates the verifier was given
  for this message: those sent in its Security header or KeyInfo, and the TLS client certificate
  of the connection. A resolved certificate must still chain to the institutions' trust anchors.

Functions here read; they decide nothing about trust.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0"
X509V3 = TOKEN_PROFILE + "#X509v3"
PKIPATH = TOKEN_PROFILE + "#X509PKIPathv1"
PKCS7 = TOKEN_PROFILE + "#PKCS7"
SKI = TOKEN_PROFILE + "#X509SubjectKeyIdentifier"
THUMBPRINT = "http://docs.oasis-open.org/wss/oasis-wss-soap-message-security-1.1#ThumbprintSHA1"
TOKEN_TYPES = (X509V3, PKIPATH, PKCS7)
MAX_PATH = 10  # certificates in one token: a real path has three or four


class TokenError(ValueError):
    """The token cannot be read as the certificates its ValueType says it holds."""


def certificates(value_type: str, der: bytes) -> list[x509.Certificate]:
    """The certificates of one X.509 token, the signer's first (its chain after it).

    Every part of a certificate a verifier reads later (names, key, signature algorithm,
    extensions) is read here, so that one that cannot be read is refused as a token."""
    try:
        if value_type == X509V3:
            certs = [x509.load_der_x509_certificate(der)]
        elif value_type == PKIPATH:
            path = [x509.load_der_x509_certificate(item) for item in _der_sequence(der)]
            certs = _signer_first(list(reversed(path)))
        elif value_type == PKCS7:
            held = pkcs7.load_der_pkcs7_certificates(der)
            if len(held) > MAX_PATH:
                raise ValueError(f"more than {MAX_PATH} certificates")
            certs = _signer_first(held)
        else:
            raise TokenError(f"unsupported token type {value_type!r}")
        for cert in certs:
            _read_whole(cert)
    except (ValueError, UnsupportedAlgorithm) as exc:
        if isinstance(exc, TokenError):
            raise
        raise TokenError(f"the {value_type.rsplit('#', 1)[-1]} token cannot be read: {exc}") from None
    return certs


def _read_whole(cert: x509.Certificate) -> None:
    """The parts of a certificate the library parses only when asked (ValueError or
    UnsupportedAlgorithm when one is malformed or of an unknown kind)."""
    cert.public_key()
    _ = cert.signature_hash_algorithm, cert.extensions, cert.subject, cert.issuer
    cert.issuer.rfc4514_string()


def _der_sequence(der: bytes) -> list[bytes]:
    """The elements of one DER SEQUENCE (X.690 §8.9), each as its own DER encoding."""
    tag, start, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("a PkiPath is one DER SEQUENCE")
    items = []
    while start < end:
        if len(items) == MAX_PATH:
            raise ValueError(f"more than {MAX_PATH} certificates")
        _, _, item_end = _tlv(der, start, end)
        items.append(der[start:item_end])
        start = item_end
    if not items:
        raise ValueError("an empty PkiPath")
    return items


def _tlv(data: bytes, at: int, limit: int | None = None) -> tuple[int, int, int]:
    """(tag, where the contents start, where the element ends) of the DER element at ``at``."""
    limit = len(data) if limit is None else limit
    if at + 2 > limit:
        raise ValueError("truncated DER")
    tag, length, offset = data[at], data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or offset + count > limit:
            raise ValueError("a DER length this form does not allow")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > limit:
        raise ValueError("truncated DER")
    return tag, offset, offset + length


def _signer_first(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The one certificate that issued none of the others, then the rest in their order."""
    if not certs:
        raise ValueError("no certificate")
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers or len(certs) == 1]
    if len(leaves) != 1:
        raise ValueError("the certificates do not form one path to one signer")
    return [leaves[0], *(c for c in certs if c is not leaves[0])]


def by_key_identifier(
    kind: str, value: bytes, candidates: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate a wsse:KeyIdentifier names by subject key identifier or SHA-1 thumbprint."""
    for cert in candidates:
        if kind == SKI and _subject_key_identifier(cert) == value:
            return cert
        if (
            kind == THUMBPRINT
            and hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest() == value
        ):
            return cert
    return None


def _subject_key_identifier(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]


def by_issuer_serial(
    issuer_name: str, serial: str, candidates: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate that ``ds:X509IssuerSerial`` names (XML-DSig §4.4.4: the issuer as an RFC 2253
    distinguished name, the serial number as an integer)."""
    try:
        number = int(serial.strip())
    except ValueError:
        return None
    wanted = distinguished_name(issuer_name)
    for cert in candidates:
        if cert.serial_number == number and distinguished_name(cert.issuer.rfc4514_string()) == wanted:
            return cert
    return None


_TYPES = {
    "CN": NameOID.COMMON_NAME.dotted_string,
    "C": NameOID.COUNTRY_NAME.dotted_string,
    "L": NameOID.LOCALITY_NAME.dotted_string,
    "ST": NameOID.STATE_OR_PROVINCE_NAME.dotted_string,
    "S": NameOID.STATE_OR_PROVINCE_NAME.dotted_string,
    "O": NameOID.ORGANIZATION_NAME.dotted_string,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string,
    "STREET": NameOID.STREET_ADDRESS.dotted_string,
    "DC": NameOID.DOMAIN_COMPONENT.dotted_string,
    "UID": NameOID.USER_ID.dotted_string,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER.dotted_string,
    "E": NameOID.EMAIL_ADDRESS.dotted_string,
    "EMAIL": NameOID.EMAIL_ADDRESS.dotted_string,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS.dotted_string,
    "ORGANIZATIONIDENTIFIER": NameOID.ORGANIZATION_IDENTIFIER.dotted_string,
    "2.5.4.97": NameOID.ORGANIZATION_IDENTIFIER.dotted_string,
}


def distinguished_name(text: str) -> frozenset[tuple[str, str]]:
    """A distinguished name as a set of (attribute OID, value) pairs, compared without regard to the
    spellings implementations differ in: attribute names or OIDs (``E``, ``EMAILADDRESS``,
    ``OID.1.2.840.113549.1.9.1``), spaces around separators, letter case and RDN order (Java
    writes RFC 2253 order, others the certificate's)."""
    pairs = set()
    for part in _components(text):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        key = name.strip().upper().removeprefix("OID.")
        pairs.add((_TYPES.get(key, key), _unescape(value.strip()).casefold()))
    return frozenset(pairs)


def _components(text: str) -> list[str]:
    """``type=value`` parts split at the RDN separators ``,`` ``;`` ``+`` outside quotes and escapes."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in ",;+" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    return re.sub(r"\\(.)", r"\1", value)
