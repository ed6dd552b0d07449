"""Clients that sign, attachments under the signature, replay and addressing — over real HTTP.

Each test is one of the trust model's findings: no client signed (`xds submit` failed against a
trust-required server, a repository's remote ITI-42 went unsigned, faults were unsigned, answers were
not checked); MTOM parts were outside every signature; a message was forgotten at its expiry but
accepted until expiry + skew, one assertion could not serve two requests, wsa:To was never compared
and the audience was one national constant; RSA-1024 and revoked certificates were accepted.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from lxml import etree
from support import RunningServer, make_config, new_database, require_trust

from xds import safexml, samples
from xds.cli import main
from xds.client import RepositoryClient
from xds.config import Config
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.soap.mtom import parse_multipart_bytes
from xds.trust import assertion as xa
from xds.trust.assertion import AssertionRejected
from xds.trust.keys import Identity, KeySet, TrustAnchors, init_keys, load_private_key
from xds.trust.wssecurity import MessageSigner, SecureChannel, secure_request, verify_answer

ISSUER = "https://helseid-xdssaml.test.nhn.no"
PATIENT = samples.patient_cx("13116900216")
ENV = f"{{{v.NS_SOAP12}}}"


def trusted_config(tmp: Path, url: str, keys: KeySet) -> Config:
    cfg = make_config(tmp / "data", url)
    cfg.server.public_url = f"http://127.0.0.1:{cfg.server.port}"
    require_trust(cfg, keys, ISSUER)
    cfg.trust.sign_cert = str(keys.institutions["ahus"].cert_path)
    cfg.trust.sign_key = str(keys.institutions["ahus"].key_path)
    return cfg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("signing")
    with new_database(tmp) as url, RunningServer(trusted_config(tmp, url, keys)) as running:
        yield running


def attributes(patient: str = PATIENT, **over: str) -> xa.TrustAttributes:
    values = dict(
        subject_id="Kari Nordmann",
        hpr_number="9144900",
        role="LE",  # the access policy's care rules ask for a role, HPR and a care relationship
        healthcare_service="Hjemmesykepleie",
        organisation_id="983971636",
    )
    values.update(over)
    return xa.TrustAttributes(resource_id=patient, **values)  # type: ignore[arg-type]


def channel(keys: KeySet, server: RunningServer, patient: str = PATIENT) -> SecureChannel:
    sender = keys.institutions["kommune"]
    signer = MessageSigner.with_attributes(
        sender.key_pem(),
        sender.cert_pem(),
        attributes(patient),
        idp_key_pem=keys.idp.key_pem(),
        idp_cert_pem=keys.idp.cert_pem(),
        issuer=ISSUER,
        audience=server.url,
    )
    return SecureChannel(signer, TrustAnchors([str(keys.ca.cert_path)]))


def signing_flags(keys: KeySet, server: RunningServer) -> list[str]:
    sender = keys.institutions["kommune"]
    return [
        *("--sign-cert", str(sender.cert_path), "--sign-key", str(sender.key_path)),
        *("--idp-cert", str(keys.idp.cert_path), "--idp-key", str(keys.idp.key_path)),
        *("--issuer", ISSUER, "--subject-id", "Kari Nordmann", "--hpr", "9144900"),
        *("--role", "LE", "--care", "Hjemmesykepleie"),
        *("--organisation-id", "983971636", "--ca-file", str(keys.ca.cert_path)),
    ]


def test_xds_submit_and_retrieve_sign_and_check_the_answers(
    server: RunningServer, keys: KeySet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "rontgen.txt"
    document.write_bytes(b"\r\nradiology report\x00\xff" + uuid.uuid4().bytes + b"\r\n")
    url = f"{server.url}/repository"
    common = [str(document), "--patient", "13116900216", "--url", url, "--class-code", "E00-1"]
    assert main(["submit", *common]) == 1  # unsigned: the endpoint requires a signed assertion
    assert "requires a signed" in capsys.readouterr().err
    assert main(["submit", *common, *signing_flags(keys, server)]) == 0
    unique_id = capsys.readouterr().out.splitlines()[-1].split("\t")[0]  # <uniqueId>\t<file>\t<mime>
    repo = server.app.state.repositories["default"]
    out = tmp_path / "back.txt"
    retrieve = [unique_id, "--repository", repo.unique_id, "-o", str(out), "--url", url]
    assert main(["retrieve", *retrieve, "--patient", "13116900216", *signing_flags(keys, server)]) == 0
    assert out.read_bytes() == document.read_bytes()
    # answers signed by someone the client does not trust are refused
    flags = signing_flags(keys, server)
    flags[flags.index("--ca-file") + 1] = str(init_keys(tmp_path / "other", ["x"]).ca.cert_path)
    assert main(["retrieve", *retrieve, "--patient", "13116900216", *flags]) == 2
    assert "not trusted" in capsys.readouterr().err


class Tamper:
    """Signs as the channel does, then changes the document on disk before it streams (in transit)."""

    def __init__(self, inner: SecureChannel, path: Path) -> None:
        self.inner, self.path = inner, path

    def secure(self, envelope: bytes, *, parts: object = None) -> bytes:
        signed = self.inner.secure(envelope, parts=parts)  # type: ignore[arg-type]
        data = bytearray(self.path.read_bytes())
        data[5] ^= 0x01
        self.path.write_bytes(bytes(data))
        return signed

    def verify_answer(self, envelope: object, **kw: object) -> None:
        self.inner.verify_answer(envelope, **kw)  # type: ignore[arg-type]


def test_an_altered_mtom_part_of_a_signed_iti41_is_refused(
    server: RunningServer, keys: KeySet, tmp_path: Path
) -> None:
    from xds.client import describe_files

    url = f"{server.url}/repository"
    path = tmp_path / "lab.txt"
    path.write_bytes(b"Hemoglobin 13.1 g/dL " + uuid.uuid4().hex.encode())
    submission, documents = describe_files([path], PATIENT, class_code="C00-1")
    with RepositoryClient(url, security=Tamper(channel(keys, server), path)) as client:  # type: ignore[arg-type]
        outcome = client.provide_and_register(submission, documents)
    assert outcome.status == "Fault" and "does not match" in outcome.errors[0].context, outcome
    submission, documents = describe_files([path], PATIENT, class_code="C00-1")
    with RepositoryClient(url, security=channel(keys, server)) as client:
        assert client.provide_and_register(submission, documents).ok


def test_an_altered_mtom_part_of_a_signed_iti43_answer_fails(
    server: RunningServer, keys: KeySet, tmp_path: Path
) -> None:
    from xds.client import describe_files

    url = f"{server.url}/repository"
    path = tmp_path / "xray.txt"
    path.write_bytes(b"no fracture " + uuid.uuid4().hex.encode())
    submission, documents = describe_files([path], PATIENT, class_code="E00-1")
    with RepositoryClient(url, security=channel(keys, server)) as client:
        assert client.provide_and_register(submission, documents).ok
    repo = server.app.state.repositories["default"]
    body = (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:RepositoryUniqueId>{repo.unique_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{submission.documents[0].unique_id}</xdsb:DocumentUniqueId>"
        f"</xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"
    ).encode()
    envelope, ctype = build_request(v.ACTION_RETRIEVE, body, to=url)
    response = httpx.post(
        url, content=channel(keys, server).secure(envelope), headers={"Content-Type": ctype}
    )
    root, parts = parse_multipart_bytes(response.headers["content-type"], response.content)
    anchors = TrustAnchors([str(keys.ca.cert_path)])
    signer = verify_answer(safexml.parse(root), anchors=anchors, parts=parts)
    assert "CN=ahus" in signer.subject.rfc4514_string()
    (part,) = parts.values()
    assert part.read() == path.read_bytes()
    part.data = part.read().replace(b"no fracture", b"a fracture!")
    with pytest.raises(AssertionRejected, match="does not match"):
        verify_answer(safexml.parse(root), anchors=anchors, parts=parts)


def find_documents(url: str) -> bytes:
    body = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{PATIENT.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()
    return build_request(v.ACTION_STORED_QUERY, body, to=url)[0]


def ask(url: str, data: bytes) -> httpx.Response:
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def reason(response: httpx.Response) -> str:
    return safexml.parse(response.content).findtext(f".//{ENV}Reason/{ENV}Text") or ""


def test_one_assertion_serves_many_requests_and_a_replay_is_refused_until_expiry_plus_skew(
    server: RunningServer, keys: KeySet
) -> None:
    url = f"{server.url}/registry"
    secure = channel(keys, server)
    first, second = secure.secure(find_documents(url)), secure.secure(find_documents(url))
    assert ask(url, first).status_code == 200 and ask(url, second).status_code == 200
    # a message whose Timestamp expired 30 s ago is still inside the 60 s skew: accepted once, then
    # remembered — its replay inside the window is refused
    sender = keys.institutions["kommune"]
    late = secure_request(
        find_documents(url),
        assertion=secure.signer.assertion,  # type: ignore[arg-type]
        key_pem=sender.key_pem(),
        cert_pem=sender.cert_pem(),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5, seconds=30),
    )
    assert ask(url, late).status_code == 200
    again = ask(url, late)
    assert again.status_code == 400 and "replayed" in reason(again)
    from sqlalchemy import select

    from xds.database.replay import replay_engine, seen_ids

    with replay_engine(server.app.state.registry.engine).connect() as conn:
        until = conn.execute(select(seen_ids.c.expires).order_by(seen_ids.c.expires.desc())).first()[0]
    assert until >= (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=25)).strftime("%Y%m%d%H%M%S")


def test_wsa_to_must_be_this_endpoint_and_the_audience_this_deployment(
    server: RunningServer, keys: KeySet
) -> None:
    url = f"{server.url}/registry"
    secure = channel(keys, server)
    elsewhere = secure.secure(find_documents("https://other-deployment.example/registry"))
    refused = ask(url, elsewhere)
    assert refused.status_code == 400 and "addressed to https://other-deployment.example" in reason(refused)
    sender = keys.institutions["kommune"]
    national = MessageSigner.with_attributes(
        sender.key_pem(),
        sender.cert_pem(),
        attributes(),
        idp_key_pem=keys.idp.key_pem(),
        idp_cert_pem=keys.idp.cert_pem(),
        issuer=ISSUER,
        audience=xa.DEFAULT_AUDIENCE,
    )
    refused = ask(url, national.secure(find_documents(url)))
    assert refused.status_code == 400 and "meant for" in reason(refused)
    assert ask(url, secure.secure(find_documents(url))).status_code == 200


def test_faults_to_signed_requests_are_signed(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    data = channel(keys, server).secure(find_documents(url))
    assert ask(url, data).status_code == 200
    fault = ask(url, data)  # the replay is refused with a fault, signed by the responding institution
    assert fault.status_code == 400
    signer = verify_answer(safexml.parse(fault.content), anchors=TrustAnchors([str(keys.ca.cert_path)]))
    assert "CN=ahus" in signer.subject.rfc4514_string()


def test_a_repository_signs_its_remote_iti42(tmp_path: Path, keys: KeySet) -> None:
    from xds.client import describe_files
    from xds.config import RepositoryConfig

    with new_database(tmp_path / "r") as registry_db, new_database(tmp_path / "s") as source_db:
        (tmp_path / "r").mkdir(exist_ok=True)
        (tmp_path / "s").mkdir(exist_ok=True)
        registry_cfg = trusted_config(tmp_path / "r", registry_db, keys)
        repository_cfg = trusted_config(tmp_path / "s", source_db, keys)
        registry_url = f"{registry_cfg.server.public_url}/registry"
        repository_cfg.repositories = [RepositoryConfig("ahus", registry_url=registry_url)]
        # the assertion names the repository's deployment: the registry accepts both audiences
        registry_cfg.trust.audience = f"{registry_cfg.server.public_url},{repository_cfg.server.public_url}"
        with RunningServer(registry_cfg), RunningServer(repository_cfg) as source:
            path = tmp_path / "note.txt"
            path.write_bytes(b"signed all the way " + uuid.uuid4().hex.encode())
            submission, documents = describe_files([path], PATIENT, class_code="C00-1")
            with RepositoryClient(f"{source.url}/repository", security=channel(keys, source)) as client:
                outcome = client.provide_and_register(submission, documents)
            assert outcome.ok, outcome
            data = channel(keys, source).secure(find_documents(registry_url))
            ids = [
                el.get("id")
                for el in safexml.parse(ask(registry_url, data).content).iter(f"{{{v.NS_RIM}}}ObjectRef")
            ]
            assert len(ids) == 1


def _revoke(ca: object, serial: int, path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_cert = ca.certificate()  # type: ignore[attr-defined]
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    )
    crl = builder.sign(load_private_key(ca.key_path), hashes.SHA256())  # type: ignore[attr-defined,arg-type]
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def test_weak_keys_and_revoked_certificates_are_refused(
    tmp_path: Path, database_url: str, keys: KeySet
) -> None:
    weak = init_keys(tmp_path / "weak", ["svak"], key_size=1024, ca_name="Weak CA")
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(keys.ca.cert_pem() + weak.ca.cert_pem())
    crl = tmp_path / "ca.crl"
    _revoke(keys.ca, 1, crl)  # a CRL revoking nobody of ours yet
    cfg = trusted_config(tmp_path, database_url, keys)
    cfg.trust.ca_file = str(anchors)
    cfg.trust.crl_files = str(crl)
    with RunningServer(cfg) as server:
        url = f"{server.url}/registry"
        token = channel(keys, server).signer.assertion

        def signed_by(who: object) -> httpx.Response:
            data = secure_request(
                find_documents(url),
                assertion=token,  # type: ignore[arg-type]
                key_pem=who.key_pem(),  # type: ignore[attr-defined]
                cert_pem=who.cert_pem(),  # type: ignore[attr-defined]
            )
            return ask(url, data)

        refused = signed_by(weak.institutions["svak"])
        assert refused.status_code == 400 and "RSA-1024" in reason(refused), reason(refused)
        kommune = keys.institutions["kommune"]
        assert signed_by(kommune).status_code == 200
        _revoke(keys.ca, kommune.certificate().serial_number, crl)  # the CRL file changes: re-read
        refused = signed_by(kommune)
        assert refused.status_code == 400 and "revoked" in reason(refused), reason(refused)
        assert signed_by(keys.institutions["ahus"]).status_code == 200


def test_answers_carry_a_timestamp_that_is_checked(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    answer = ask(url, channel(keys, server).secure(find_documents(url)))
    anchors = TrustAnchors([str(keys.ca.cert_path)])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    with pytest.raises(AssertionRejected, match="expired"):
        verify_answer(safexml.parse(answer.content), anchors=anchors, now=later)
    root = safexml.parse(answer.content)
    verify_answer(root, anchors=anchors)
    root.find(f"{ENV}Body")[0].set("status", v.RESPONSE_FAILURE)
    with pytest.raises(AssertionRejected, match="does not match"):
        verify_answer(etree.fromstring(etree.tostring(root)), anchors=anchors)


def test_bind_tls_requires_the_tls_client_to_be_the_message_signer(
    tmp_path: Path, database_url: str, keys: KeySet
) -> None:
    import ssl

    cfg = trusted_config(tmp_path, database_url, keys)
    server_id = keys.institutions["ahus"]
    cfg.server.tls_cert, cfg.server.tls_key = str(server_id.cert_path), str(server_id.key_path)
    cfg.server.tls_ca = str(keys.ca.cert_path)
    cfg.server.public_url = f"https://127.0.0.1:{cfg.server.port}"
    cfg.trust.bind_tls = True
    kommune = keys.institutions["kommune"]
    context = ssl.create_default_context(cafile=str(keys.ca.cert_path))
    context.load_cert_chain(str(kommune.cert_path), str(kommune.key_path))
    with RunningServer(cfg) as server:
        url = f"{server.url}/registry"
        token = channel(keys, server).signer.assertion
        ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'

        def signed_by(who: object) -> httpx.Response:
            data = secure_request(
                find_documents(url),
                assertion=token,  # type: ignore[arg-type]
                key_pem=who.key_pem(),  # type: ignore[attr-defined]
                cert_pem=who.cert_pem(),  # type: ignore[attr-defined]
            )
            return httpx.post(url, content=data, headers={"Content-Type": ctype}, verify=context, timeout=30)

        assert signed_by(kommune).status_code == 200
        refused = signed_by(keys.institutions["ahus"])  # a valid signature, but not the TLS client's
        assert refused.status_code == 400 and "not the message signer's" in reason(refused)


def _signing_certificate(keys: KeySet, tmp: Path, usage: x509.KeyUsage) -> Identity:
    """An institution certificate under our CA without subjectAltName or extended key usage."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_key = load_private_key(keys.ca.key_path)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"signer-{uuid.uuid4().hex[:6]}")]))
        .issuer_name(keys.ca.certificate().subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    name = uuid.uuid4().hex[:8]
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Identity(name, tmp / f"{name}.pem", tmp / f"{name}.key")


def test_xml_signature_certificates_follow_the_signing_policy_not_tls(
    server: RunningServer, keys: KeySet, tmp_path: Path
) -> None:
    """No subjectAltName and no clientAuth EKU is fine for a signature; key usage must allow signing."""
    url = f"{server.url}/registry"
    token = channel(keys, server).signer.assertion
    signing = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
    encipher_only = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    for usage, accepted in ((signing, True), (encipher_only, False)):
        who = _signing_certificate(keys, tmp_path, usage)
        data = secure_request(
            find_documents(url), assertion=token, key_pem=who.key_pem(), cert_pem=who.cert_pem()
        )  # type: ignore[arg-type]
        answer = ask(url, data)
        assert answer.status_code == (200 if accepted else 400), reason(answer)
        if not accepted:
            assert "digitalSignature" in reason(answer)


def test_a_signing_key_is_loaded_once_per_process(keys) -> None:  # type: ignore[no-untyped-def]
    """Loading an RSA key checks it (~28 ms for 2048 bits): signers made per request — a repository
    forwarding ITI-42, `xds query`, the gateways — share the one loaded key."""
    from xds.trust.wssecurity import MessageSigner

    who = keys.institutions["kommune"]
    first = MessageSigner(who.key_pem(), who.cert_pem())
    again = MessageSigner(who.key_pem(), who.cert_pem())
    assert first.key is again.key
