"""Standard WS-Security forms from an independent signer: requests signed by Debian's ``xmlsec1``.

No project signing code makes these messages: the XUA assertion and the message are XML text
templates signed by the ``xmlsec1`` command line. The server must accept each standard form — the
signer's certificate as a BinarySecurityToken referenced directly or by key identifier, or in
ds:X509Data; a signature that also covers the assertion; role and purpose of use as HL7 CE elements
(ITI TF-2 §3.40.4.1.2); timestamps with offsets and fractions of a second.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from support import RunningServer, make_config, new_database, require_trust

from xds import safexml, samples
from xds.metadata import vocabulary as v
from xds.trust.keys import Identity, KeySet

pytestmark = pytest.mark.skipif(
    shutil.which("xmlsec1") is None, reason="needs Debian's xmlsec1 (.ci/run installs it)"
)

ISSUER = "https://helseid-xdssaml.test.nhn.no"
PATIENT = samples.patient_cx("13116900216")
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
SKI = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509SubjectKeyIdentifier"
)
PKIPATH = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509PKIPathv1"
PKCS7 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#PKCS7"
B64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("xmlsec1")
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        cfg.server.public_url = f"http://127.0.0.1:{cfg.server.port}"
        require_trust(cfg, keys, ISSUER)
        with RunningServer(cfg) as running:
            yield running


def xmlsec1(template: str, who: Identity, tmp: Path, *, node_id: str) -> str:
    """``template`` with its ds:Signature of Id ``node_id`` filled in by xmlsec1."""
    name = tmp / f"{uuid.uuid4().hex}.xml"
    name.write_text(template)
    ids = [
        "--id-attr:Id", f"{v.NS_SOAP12}:Body",
        "--id-attr:Id", f"{WSU}:Timestamp",
        "--id-attr:Id", f"{WSSE}:BinarySecurityToken",
        "--id-attr:Id", "http://www.w3.org/2000/09/xmldsig#:Signature",
        "--id-attr:ID", f"{SAML}:Assertion",
    ]  # fmt: skip
    for header in ("Action", "MessageID", "To", "ReplyTo"):
        ids += ["--id-attr:Id", f"{v.NS_WSA}:{header}"]
    done = subprocess.run(
        [
            "xmlsec1",
            "--sign",
            "--privkey-pem",
            f"{who.key_path},{who.cert_path}",
            *ids,
            "--node-id",
            node_id,
            str(name),
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return done.stdout.decode()


def der_base64(who: Identity) -> str:
    lines = who.cert_pem().decode().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def signature_template(uris: list[str], key_info: str, sig_id: str, *, enveloped: bool = False) -> str:
    transforms = (
        '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
        if enveloped
        else ""
    ) + f'<ds:Transform Algorithm="{EXC}"/>'
    refs = "".join(
        f'<ds:Reference URI="#{uri}"><ds:Transforms>{transforms}</ds:Transforms>'
        '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference>'
        for uri in uris
    )
    return (
        f'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="{sig_id}"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{EXC}"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
        f"{refs}</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo>{key_info}</ds:KeyInfo></ds:Signature>"
    )


def attribute(name: str, value: str) -> str:
    return f'<saml2:Attribute Name="{name}"><saml2:AttributeValue>{value}</saml2:AttributeValue></saml2:Attribute>'


def assertion(keys: KeySet, audience: str, tmp: Path, *, offset: bool) -> str:
    """A XUA assertion as an identity provider sends it, signed by xmlsec1 with the IdP's key."""
    now = dt.datetime.now(dt.UTC)
    zone = dt.timezone(dt.timedelta(hours=2)) if offset else dt.UTC

    def instant(moment: dt.datetime) -> str:
        text = moment.astimezone(zone).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")

    aid = f"_{uuid.uuid4().hex}"
    ce = 'xmlns:hl7="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="hl7:CE"'
    attributes = "".join(
        [
            attribute("urn:oasis:names:tc:xacml:1.0:subject:subject-id", "Kari Nordmann"),
            attribute("urn:oasis:names:tc:xspa:1.0:subject:npi", "9144900"),
            attribute(
                "urn:oasis:names:tc:xacml:2.0:subject:role",
                f'<hl7:Role {ce} code="LE" codeSystem="2.16.578.1.12.4.1.1.9060" displayName="Lege"/>',
            ),
            attribute("urn:oasis:names:tc:xspa:1.0:subject:organization-id", "983971636"),
            attribute(
                "urn:oasis:names:tc:xacml:2.0:action:purpose",
                f'<hl7:PurposeOfUse {ce} code="TREAT" codeSystem="2.16.840.1.113883.1.11.20448"/>',
            ),
            attribute("urn:oasis:names:tc:xacml:1.0:resource:resource-id", PATIENT.replace("&", "&amp;")),
        ]
    )
    key_info = "<ds:X509Data><ds:X509Certificate/></ds:X509Data>"
    template = (
        f'<saml2:Assertion xmlns:saml2="{SAML}" ID="{aid}" Version="2.0" IssueInstant="{instant(now)}">'
        f"<saml2:Issuer>{ISSUER}</saml2:Issuer>"
        + signature_template([aid], key_info, f"sig-{aid}", enveloped=True)
        + '<saml2:Subject><saml2:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">'
        "Kari Nordmann</saml2:NameID>"
        '<saml2:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"/></saml2:Subject>'
        f'<saml2:Conditions NotBefore="{instant(now - dt.timedelta(minutes=1))}" '
        f'NotOnOrAfter="{instant(now + dt.timedelta(minutes=30))}"><saml2:AudienceRestriction>'
        f"<saml2:Audience>{audience}</saml2:Audience></saml2:AudienceRestriction></saml2:Conditions>"
        f'<saml2:AuthnStatement AuthnInstant="{instant(now)}"><saml2:AuthnContext><saml2:AuthnContextClassRef>'
        "urn:oasis:names:tc:SAML:2.0:ac:classes:X509</saml2:AuthnContextClassRef></saml2:AuthnContext>"
        f"</saml2:AuthnStatement><saml2:AttributeStatement>{attributes}</saml2:AttributeStatement>"
        "</saml2:Assertion>"
    )
    signed = xmlsec1(template, keys.idp, tmp, node_id=f"sig-{aid}")
    return signed.split("?>", 1)[1].strip() if signed.startswith("<?xml") else signed


def der_sequence(items: list[bytes]) -> bytes:
    """A DER SEQUENCE of ``items`` (X.690 §8.9), written out here rather than by the code under test."""
    body = b"".join(items)
    if len(body) < 0x80:
        return b"\x30" + bytes([len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(size)]) + size + body


def binary_token(form: str, who: Identity, keys: KeySet, token_id: str) -> str:
    """The signer's certificate as a BinarySecurityToken of the form's type, or nothing."""
    if form in (
        "x509data",
        "issuer serial",
        "issuer serial only",
    ):  # no token: the KeyInfo names the certificate
        return ""
    if form == "pkipath":  # ordered from the anchor's side: the signer's certificate last
        ders = [c.public_bytes(Encoding.DER) for c in (keys.ca.certificate(), who.certificate())]
        value, kind = base64.b64encode(der_sequence(ders)).decode(), PKIPATH
    elif form == "pkcs7":
        p7 = pkcs7.serialize_certificates([who.certificate(), keys.ca.certificate()], Encoding.DER)
        value, kind = base64.b64encode(p7).decode(), PKCS7
    else:
        value, kind = der_base64(who), X509V3
    return (
        f'<wsse:BinarySecurityToken wsu:Id="{token_id}" ValueType="{kind}" EncodingType="{B64}">'
        f"{value}</wsse:BinarySecurityToken>"
    )


def key_info(form: str, who: Identity, token_id: str) -> str:
    if form in ("reference", "pkipath", "pkcs7"):
        kind = {"pkipath": PKIPATH, "pkcs7": PKCS7}.get(form, X509V3)
        return (
            f'<wsse:SecurityTokenReference xmlns:wsse="{WSSE}"><wsse:Reference URI="#{token_id}" '
            f'ValueType="{kind}"/></wsse:SecurityTokenReference>'
        )
    if form == "issuer serial":  # filled in by xmlsec1 from the signing certificate
        return "<ds:X509Data><ds:X509IssuerSerial/><ds:X509Certificate/></ds:X509Data>"
    if form in ("issuer serial only", "issuer serial of token"):  # Apache WSS4J's default form
        cert = who.certificate()
        issuer = ", ".join(cert.issuer.rfc4514_string().split(","))
        return (
            f'<wsse:SecurityTokenReference xmlns:wsse="{WSSE}"><ds:X509Data><ds:X509IssuerSerial>'
            f"<ds:X509IssuerName>{issuer}</ds:X509IssuerName>"
            f"<ds:X509SerialNumber>{cert.serial_number}</ds:X509SerialNumber>"
            "</ds:X509IssuerSerial></ds:X509Data></wsse:SecurityTokenReference>"
        )
    if form == "key identifier":
        ski = who.certificate().extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        return (
            f'<wsse:SecurityTokenReference xmlns:wsse="{WSSE}"><wsse:KeyIdentifier ValueType="{SKI}" '
            f'EncodingType="{B64}">{base64.b64encode(ski).decode()}</wsse:KeyIdentifier>'
            "</wsse:SecurityTokenReference>"
        )
    return "<ds:X509Data><ds:X509Certificate/></ds:X509Data>"


def request(
    server: RunningServer,
    keys: KeySet,
    tmp: Path,
    *,
    form: str,
    cover_assertion: bool,
    offset: bool,
    with_expires: bool = True,
) -> str:
    url = f"{server.url}/registry"
    who = keys.institutions["kommune"]
    token = assertion(keys, server.config.server.public_url, tmp, offset=offset)
    aid = safexml.parse(token.encode()).get("ID")
    now = dt.datetime.now(dt.UTC)
    zone = dt.timezone(dt.timedelta(hours=2)) if offset else dt.UTC
    created = now.astimezone(zone).isoformat(timespec="microseconds").replace("+00:00", "Z")
    expires = (
        (now + dt.timedelta(minutes=5)).astimezone(zone).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
    token_id = f"X509-{uuid.uuid4().hex}"
    uris = ["body", "ts", "action", "msgid", "to"] + ([aid] if cover_assertion else [])
    bst = binary_token(form, who, keys, token_id)
    query = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{PATIENT.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    )
    template = (
        f'<soap:Envelope xmlns:soap="{v.NS_SOAP12}" xmlns:wsa="{v.NS_WSA}" xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}">'
        "<soap:Header>"
        f'<wsa:Action soap:mustUnderstand="true" wsu:Id="action">{v.ACTION_STORED_QUERY}</wsa:Action>'
        f'<wsa:MessageID wsu:Id="msgid">urn:uuid:{uuid.uuid4()}</wsa:MessageID>'
        f'<wsa:To soap:mustUnderstand="true" wsu:Id="to">{server.config.server.public_url}/registry</wsa:To>'
        '<wsse:Security soap:mustUnderstand="true">'
        f'<wsu:Timestamp wsu:Id="ts"><wsu:Created>{created}</wsu:Created>'
        + (f"<wsu:Expires>{expires}</wsu:Expires>" if with_expires else "")
        + f"</wsu:Timestamp>{bst}{token}"
        + signature_template(uris, key_info(form, who, token_id), "message-signature")
        + f'</wsse:Security></soap:Header><soap:Body wsu:Id="body">{query}</soap:Body></soap:Envelope>'
    )
    assert url
    return xmlsec1(template, who, tmp, node_id="message-signature")


FORMS = [
    ("reference", False, False, True),
    ("key identifier", False, True, True),
    ("x509data", False, False, True),
    ("reference", True, True, True),
    ("x509data", True, False, True),
    ("reference", False, True, False),  # a Timestamp without Expires (optional in WS-Security)
    ("pkipath", False, False, True),
    ("pkcs7", True, False, True),
    ("issuer serial", False, False, True),
    ("issuer serial of token", False, False, True),
]


@pytest.mark.parametrize(("form", "cover_assertion", "offset", "with_expires"), FORMS)
def test_xmlsec1_signed_requests_are_accepted(
    server: RunningServer,
    keys: KeySet,
    tmp_path: Path,
    form: str,
    cover_assertion: bool,
    offset: bool,
    with_expires: bool,
) -> None:
    signed = request(
        server,
        keys,
        tmp_path,
        form=form,
        cover_assertion=cover_assertion,
        offset=offset,
        with_expires=with_expires,
    )
    assert "<ds:DigestValue/>" not in signed and "<ds:SignatureValue/>" not in signed
    url = f"{server.url}/registry"
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    response = httpx.post(url, content=signed.encode(), headers={"Content-Type": ctype}, timeout=30)
    assert response.status_code == 200, response.text[:600]
    assert v.RESPONSE_SUCCESS.encode() in response.content
    # and the same bytes once more are a replay
    again = httpx.post(url, content=signed.encode(), headers={"Content-Type": ctype}, timeout=30)
    assert again.status_code == 400 and b"replayed" in again.content


def test_our_own_client_is_accepted_too(server: RunningServer, keys: KeySet) -> None:
    from xds.soap.envelope import build_request
    from xds.trust.assertion import TrustAttributes
    from xds.trust.wssecurity import MessageSigner

    url = f"{server.url}/registry"
    who = keys.institutions["kommune"]
    signer = MessageSigner.with_attributes(
        who.key_pem(),
        who.cert_pem(),
        TrustAttributes(subject_id="Kari Nordmann", organisation_id="983971636", resource_id=PATIENT),
        idp_key_pem=keys.idp.key_pem(),
        idp_cert_pem=keys.idp.cert_pem(),
        issuer=ISSUER,
        audience=server.config.server.public_url,
    )
    envelope, ctype = build_request(v.ACTION_STORED_QUERY, b"<x/>", to=url)
    response = httpx.post(url, content=signer.secure(envelope), headers={"Content-Type": ctype}, timeout=30)
    assert b"requires a signed" not in response.content and b"wsse:" not in response.content, response.text


def test_an_issuer_serial_reference_to_nothing_sent_is_refused(
    server: RunningServer, keys: KeySet, tmp_path: Path
) -> None:
    """Without a TLS client certificate the reference names no certificate this server was given."""
    signed = request(server, keys, tmp_path, form="issuer serial only", cover_assertion=False, offset=False)
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    response = httpx.post(f"{server.url}/registry", content=signed.encode(), headers={"Content-Type": ctype})
    assert response.status_code == 400 and b"SecurityTokenUnavailable" in response.content, response.text


def test_an_issuer_serial_reference_to_the_tls_client_certificate_is_accepted(
    keys: KeySet, tmp_path: Path, database_url: str
) -> None:
    """Apache WSS4J's default: the signature names its certificate by issuer and serial number only;
    over mutual TLS the connection's client certificate is that certificate (WSS X.509 Token
    Profile 1.1 §3.2). It must still chain to the institutions' anchors."""
    cfg = make_config(tmp_path / "data", database_url)
    cfg.server.tls_cert = str(keys.institutions["ahus"].cert_path)
    cfg.server.tls_key = str(keys.institutions["ahus"].key_path)
    cfg.server.tls_ca = str(keys.ca.cert_path)
    require_trust(cfg, keys, ISSUER)
    client = keys.institutions["kommune"]
    tls = ssl.create_default_context(cafile=str(keys.ca.cert_path))
    tls.load_cert_chain(str(client.cert_path), str(client.key_path))
    with RunningServer(cfg) as running:
        running.config.server.public_url = running.url
        signed = request(
            running, keys, tmp_path, form="issuer serial only", cover_assertion=True, offset=False
        )
        ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
        response = httpx.post(
            f"{running.url}/registry", content=signed.encode(), headers={"Content-Type": ctype}, verify=tls
        )
        assert response.status_code == 200, response.text[:600]
        assert v.RESPONSE_SUCCESS.encode() in response.content
