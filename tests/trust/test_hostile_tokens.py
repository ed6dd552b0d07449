"""Hostile X.509 tokens over HTTP (WSS X.509 Token Profile 1.1 §3): a certificate whose key, type or
extensions cannot be read, a PKIPath from another CA or of another signer, an issuer-serial reference
naming another institution's certificate. Each is a SOAP fault with a wsse subcode, never an
internal error, and the server keeps answering.

The messages are signed by our own signer; the token is then replaced (the signature does not cover
KeyInfo or the BinarySecurityToken), as an attacker would."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree
from support import RunningServer, make_config, new_database, require_trust

from xds import samples
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.trust import tokens
from xds.trust.assertion import TrustAttributes
from xds.trust.keys import KeySet
from xds.trust.wssecurity import MessageSigner

ISSUER = "https://idp.hostile-tokens.test"
WSSE = "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")  # the OID 1.2.840.113549.1.1.1, DER
PKCS7_DATA = bytes.fromhex("301406092a864886f70d010701a0070405") + b"hello"  # ContentInfo of id-data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("hostile-tokens")
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        cfg.server.public_url = f"http://127.0.0.1:{cfg.server.port}"
        require_trust(cfg, keys, ISSUER)
        with RunningServer(cfg) as running:
            yield running


def signed(server: RunningServer, keys: KeySet, who: str = "kommune") -> etree._Element:
    me = keys.institutions[who]
    signer = MessageSigner.with_attributes(
        me.key_pem(),
        me.cert_pem(),
        TrustAttributes(
            subject_id="Kari Nordmann",
            organisation_id="983971636",
            resource_id=samples.patient_cx("13116900216"),
        ),
        idp_key_pem=keys.idp.key_pem(),
        idp_cert_pem=keys.idp.cert_pem(),
        issuer=ISSUER,
        audience=server.config.server.public_url,
    )
    envelope, _ = build_request(v.ACTION_STORED_QUERY, b"<x/>", to=f"{server.url}/registry")
    return etree.fromstring(signer.secure(envelope))


def post(server: RunningServer, root: etree._Element) -> httpx.Response:
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    return httpx.post(
        f"{server.url}/registry", content=etree.tostring(root), headers={"Content-Type": ctype}, timeout=30
    )


def message_key_info(root: etree._Element) -> etree._Element:
    return root.findall(f".//{DS}KeyInfo")[-1]  # the first is the assertion's


def set_token(root: etree._Element, value_type: str, der: bytes) -> None:
    token = root.find(f".//{WSSE}BinarySecurityToken")
    token.set("ValueType", value_type)
    token.text = base64.b64encode(der).decode()
    message_key_info(root).find(f"{WSSE}SecurityTokenReference/{WSSE}Reference").set("ValueType", value_type)


def refer_by(root: etree._Element, reference: etree._Element) -> None:
    holder = message_key_info(root).find(f"{WSSE}SecurityTokenReference")
    for child in list(holder):
        holder.remove(child)
    holder.append(reference)


def self_signed(*extensions: x509.ExtensionType) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(dt.datetime(2020, 1, 1))
        .not_valid_after(dt.datetime(2040, 1, 1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def unknown_key_type() -> bytes:
    der = self_signed()
    assert der.count(RSA_ENCRYPTION) == 1
    return der.replace(RSA_ENCRYPTION, RSA_ENCRYPTION[:-1] + b"\x63")  # 1.2.840.113549.1.1.99


def malformed_key_identifier() -> bytes:
    return self_signed(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.14"), b"\x01\x02"))


def path(*certs: x509.Certificate) -> bytes:
    body = b"".join(c.public_bytes(Encoding.DER) for c in certs)
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(size)]) + size + body


def assert_refused(response: httpx.Response, subcode: str) -> None:
    assert response.status_code == 400, response.text[:800]
    assert f"f:{subcode}</".encode() in response.content, response.text[:800]


@pytest.mark.parametrize(
    ("value_type", "der"),
    [
        (tokens.X509V3, unknown_key_type()),
        (tokens.PKCS7, PKCS7_DATA),
        (tokens.X509V3, malformed_key_identifier()),
    ],
    ids=["unknown key type", "PKCS7 of data", "malformed subject key identifier"],
)
def test_a_token_that_cannot_be_read_is_an_invalid_security_token(
    server: RunningServer, keys: KeySet, value_type: str, der: bytes
) -> None:
    root = signed(server, keys)
    set_token(root, value_type, der)
    assert_refused(post(server, root), "InvalidSecurityToken")


def test_a_key_identifier_among_unreadable_certificates_is_an_invalid_security_token(
    server: RunningServer, keys: KeySet
) -> None:
    root = signed(server, keys)
    set_token(root, tokens.X509V3, malformed_key_identifier())
    identifier = etree.Element(f"{WSSE}KeyIdentifier", ValueType=tokens.SKI)
    identifier.text = base64.b64encode(b"k" * 20).decode()
    refer_by(root, identifier)
    assert_refused(post(server, root), "InvalidSecurityToken")


def test_a_pki_path_of_another_ca_fails_the_chain(server: RunningServer, keys: KeySet, rogue: KeySet) -> None:
    root = signed(server, keys)
    set_token(root, tokens.PKIPATH, path(rogue.ca.certificate(), rogue.institutions["rogue"].certificate()))
    assert_refused(post(server, root), "FailedCheck")


def test_a_pki_path_whose_leaf_is_not_the_signer_fails(server: RunningServer, keys: KeySet) -> None:
    root = signed(server, keys, who="ahus")
    set_token(root, tokens.PKIPATH, path(keys.ca.certificate(), keys.institutions["kommune"].certificate()))
    assert_refused(post(server, root), "FailedCheck")


def test_issuer_serial_of_another_institution_sent_along_fails(server: RunningServer, keys: KeySet) -> None:
    root = signed(server, keys, who="kommune")
    other = keys.institutions["ahus"].certificate()
    set_token(root, tokens.X509V3, other.public_bytes(Encoding.DER))
    data = etree.Element(f"{DS}X509Data")
    named = etree.SubElement(data, f"{DS}X509IssuerSerial")
    etree.SubElement(named, f"{DS}X509IssuerName").text = other.issuer.rfc4514_string()
    etree.SubElement(named, f"{DS}X509SerialNumber").text = str(other.serial_number)
    refer_by(root, data)
    assert_refused(post(server, root), "FailedCheck")


def test_the_server_still_answers_a_good_message(server: RunningServer, keys: KeySet) -> None:
    response = post(server, signed(server, keys))
    assert response.status_code == 200 and b"AdhocQueryResponse" in response.content, response.text[:800]
