"""Keys and certificates for the trust model: PEM files, a development CA, trust anchors.

``xds keys init`` makes what a demo or a test deployment needs, in one folder: a development CA,
an identity provider (the issuer of XUA assertions, ITI TF-2 §3.40), and one key and certificate
per institution (the signer of its requests and answers, and its TLS identity for ATNA secure-node
mutual TLS, ITI TF-2 §3.19). Private keys are written with mode 0600 and never logged; in
production they come from the institution's own PKI (Buypass/Commfides virksomhetssertifikat).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

DEFAULT_INSTITUTIONS = ("ahus", "kommune", "fastlege")


@dataclass(frozen=True)
class Identity:
    """A named key pair: the certificate (public) and the private key, as PEM files."""

    name: str
    cert_path: Path
    key_path: Path

    def certificate(self) -> x509.Certificate:
        return load_certificate(self.cert_path)

    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    def key_pem(self) -> bytes:
        return self.key_path.read_bytes()


def load_certificate(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (trust anchors)."""
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def load_private_key(path: str | Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"identity name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def signature_algorithm(key_pem: bytes) -> str:
    """The XML-DSig algorithm for a private key: RSA-SHA256, or ECDSA-SHA256 for EC keys."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return "ecdsa-sha256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-sha256"


def _new_key(algorithm: str, key_size: int) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if algorithm == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    raise ValueError(f"key algorithm {algorithm!r}: choose rsa or ec")


def _write_private(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    subject: x509.Name,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    days: int,
    hosts: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, True, True, False, False, False, False, False, False), critical=True
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class KeySet:
    """What ``xds keys init`` made: the CA (trust anchor), the IdP and the institutions."""

    directory: Path
    ca: Identity
    idp: Identity
    institutions: dict[str, Identity]


def init_keys(
    directory: str | Path,
    institutions: tuple[str, ...] | list[str] = DEFAULT_INSTITUTIONS,
    *,
    ca_name: str = "XDS development CA",
    days: int = 365,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    key_size: int = 2048,
    algorithm: str = "rsa",
) -> KeySet:
    """Create a development CA, an identity provider and one identity per institution in ``directory``.

    ``algorithm`` is ``rsa`` (RSA-2048 by default) or ``ec`` (ECDSA P-256).
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _new_key(algorithm, key_size)
    ca_subject = _name(ca_name, "XDS development")
    ca_cert = _issue(ca_subject, ca_key, ca_subject, ca_key, ca=True, days=days)

    def save(
        name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ) -> Identity:
        cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, key)
        return Identity(name, cert_path, key_path)

    ca = save("ca", ca_cert, ca_key)

    def leaf(name: str, organisation: str) -> Identity:
        key = _new_key(algorithm, key_size)
        cert = _issue(_name(name, organisation), key, ca_subject, ca_key, ca=False, days=days, hosts=hosts)
        return save(name, cert, key)

    idp = leaf("idp", "XDS development identity provider")
    members = {_safe(n): leaf(_safe(n), n) for n in institutions}
    return KeySet(folder, ca, idp, members)


@functools.lru_cache(maxsize=32)
def _anchor_store(files: tuple[tuple[str, float], ...]) -> Store:
    anchors: list[x509.Certificate] = []
    for path, _ in files:
        anchors += load_certificates(path)
    return Store(anchors)


def verify_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    ca_pem_file: str | Path | list[str] | tuple[str, ...],
) -> None:
    """The certificate chains to one of the trust anchors (one PEM file or several) and is valid now.

    RFC 5280 path validation by ``cryptography``; raises
    :class:`cryptography.x509.verification.VerificationError` otherwise. The anchors are read once
    per set of file versions, not per request.
    """
    paths = [str(ca_pem_file)] if isinstance(ca_pem_file, str | Path) else [str(p) for p in ca_pem_file]
    store = _anchor_store(tuple((p, os.stat(p).st_mtime) for p in paths))
    PolicyBuilder().store(store).build_client_verifier().verify(leaf, intermediates)
