"""X.509 token types and references (WSS X.509 Token Profile 1.1 §3): how the certificates are read,
and hostile tokens refused with a reason instead of an exception or a long parse."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

from xds.trust import tokens
from xds.trust.keys import KeySet


def sequence(body: bytes) -> bytes:
    if len(body) < 0x80:
        return b"\x30" + bytes([len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(size)]) + size + body


def test_a_pki_path_gives_the_signer_first(keys: KeySet) -> None:
    ca, leaf = keys.ca.certificate(), keys.institutions["kommune"].certificate()
    path = sequence(ca.public_bytes(Encoding.DER) + leaf.public_bytes(Encoding.DER))
    assert tokens.certificates(tokens.PKIPATH, path) == [leaf, ca]


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x84\xff\xff\xff\xff",  # a length far past the end
        b"\x30\x89" + b"\x01" * 9,  # a length of more bytes than DER allows here
        b"\x31\x00",  # a SET, not a SEQUENCE
        b"\x30\x00",  # empty
        b"\x30\x03\x02\x01\x01",  # an INTEGER, not a certificate
        b"\x30\x02\x30\x00trailing",
    ],
)
def test_malformed_pki_paths_are_refused(der: bytes) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.certificates(tokens.PKIPATH, der)


def test_a_path_longer_than_any_real_one_is_refused(keys: KeySet) -> None:
    one = keys.ca.certificate().public_bytes(Encoding.DER)
    with pytest.raises(tokens.TokenError, match="more than"):
        tokens.certificates(tokens.PKIPATH, sequence(one * (tokens.MAX_PATH + 1)))


def test_two_unrelated_certificates_name_no_single_signer(keys: KeySet) -> None:
    a, b = (keys.institutions[n].certificate().public_bytes(Encoding.DER) for n in ("ahus", "kommune"))
    with pytest.raises(tokens.TokenError, match="one signer"):
        tokens.certificates(tokens.PKIPATH, sequence(a + b))


def test_an_unknown_token_type_is_refused(keys: KeySet) -> None:
    with pytest.raises(tokens.TokenError, match="unsupported"):
        tokens.certificates(tokens.TOKEN_PROFILE + "#SPKI", b"")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("CN=Dev CA,O=Helse Midt,C=NO", "C=NO, O=Helse Midt, CN=Dev CA"),
        ("CN=dev ca,O=HELSE MIDT", "cn=Dev CA;o=Helse Midt"),
        ("E=ops@example.no,CN=X", "EMAILADDRESS=ops@example.no,CN=X"),
        ("OID.2.5.4.3=X", "CN=X"),
        ("2.5.4.97=NTRNO-983971636,CN=X", "organizationIdentifier=NTRNO-983971636,CN=X"),
        (r"O=Nordland\, Sykehus,CN=X", 'O="Nordland, Sykehus",CN=X'),
    ],
)
def test_distinguished_names_compare_as_implementations_spell_them(a: str, b: str) -> None:
    assert tokens.distinguished_name(a) == tokens.distinguished_name(b)


def test_different_names_differ() -> None:
    assert tokens.distinguished_name("CN=A,O=B") != tokens.distinguished_name("CN=A,O=C")
    assert tokens.distinguished_name("CN=A") != tokens.distinguished_name("CN=A,O=B")


def test_issuer_serial_names_one_certificate(keys: KeySet) -> None:
    certs = [keys.institutions[n].certificate() for n in ("ahus", "kommune")]
    wanted = certs[1]
    found = tokens.by_issuer_serial(wanted.issuer.rfc4514_string(), str(wanted.serial_number), certs)
    assert found == wanted
    assert tokens.by_issuer_serial(wanted.issuer.rfc4514_string(), "12", certs) is None
    assert tokens.by_issuer_serial("CN=Someone else", str(wanted.serial_number), certs) is None
    assert tokens.by_issuer_serial(wanted.issuer.rfc4514_string(), "not a number", certs) is None


def chain(length: int) -> list[x509.Certificate]:
    """``length`` certificates, each issued by the next: one path, one signer (the first)."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(length)]
    names = [x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"link {i}")]) for i in range(length)]
    certs = []
    for i in range(length):
        up = min(i + 1, length - 1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(names[i])
            .issuer_name(names[up])
            .public_key(keys[i].public_key())
            .serial_number(i + 1)
            .not_valid_before(dt.datetime(2020, 1, 1))
            .not_valid_after(dt.datetime(2040, 1, 1))
        )
        certs.append(builder.sign(keys[up], hashes.SHA256()))
    return certs


def test_a_pkcs7_token_holding_more_certificates_than_any_real_path_is_refused() -> None:
    """The bound on a PkiPath holds for PKCS#7 too (each certificate is read and offered to the
    path builder: thousands of them cost a request seconds of CPU)."""
    path = chain(tokens.MAX_PATH)
    assert tokens.certificates(tokens.PKCS7, pkcs7.serialize_certificates(path, Encoding.DER))[0] == path[0]
    longer = chain(tokens.MAX_PATH + 1)
    with pytest.raises(tokens.TokenError, match="more than"):
        tokens.certificates(tokens.PKCS7, pkcs7.serialize_certificates(longer, Encoding.DER))


def test_a_reference_by_identifier_keeps_the_tokens_chain_for_the_path(keys: KeySet) -> None:
    """A signature naming its certificate by key identifier or issuer-serial, the certificate sent
    as a PkiPath: the path's other certificates stay available to build the chain (an intermediate
    CA need not be in ca_file)."""
    import base64

    from cryptography import x509
    from lxml import etree

    from xds.trust import wssecurity as ws

    ca, leaf = keys.ca.certificate(), keys.institutions["kommune"].certificate()
    path = sequence(ca.public_bytes(Encoding.DER) + leaf.public_bytes(Encoding.DER))
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    wsse, ds = ws.NS_WSSE, "http://www.w3.org/2000/09/xmldsig#"
    references = {
        "key identifier": f'<wsse:KeyIdentifier ValueType="{tokens.SKI}">{base64.b64encode(ski).decode()}'
        "</wsse:KeyIdentifier>",
        "issuer serial": f"<ds:X509Data><ds:X509IssuerSerial><ds:X509IssuerName>{leaf.issuer.rfc4514_string()}"
        f"</ds:X509IssuerName><ds:X509SerialNumber>{leaf.serial_number}</ds:X509SerialNumber>"
        "</ds:X509IssuerSerial></ds:X509Data>",
    }
    for form, reference in references.items():
        security = etree.fromstring(
            f'<wsse:Security xmlns:wsse="{wsse}" xmlns:ds="{ds}">'
            f'<wsse:BinarySecurityToken ValueType="{tokens.PKIPATH}">{base64.b64encode(path).decode()}'
            f"</wsse:BinarySecurityToken><ds:Signature><ds:KeyInfo><wsse:SecurityTokenReference>"
            f"{reference}</wsse:SecurityTokenReference></ds:KeyInfo></ds:Signature></wsse:Security>"
        )
        signature = security.find(f"{{{ds}}}Signature")
        assert ws._signer_certificate(signature, security) == (leaf, [ca]), form
