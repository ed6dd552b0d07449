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
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

DEFAULT_INSTITUTIONS = ("ahus", "kommune", "fastlege")
DEVELOPMENT_ISSUER = "https://idp.xds.invalid"  # the development identity provider's issuer name


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
    return private_key(Path(path).read_bytes())


@functools.lru_cache(maxsize=32)
def private_key(key_pem: bytes) -> PrivateKeyTypes:
    """The key of a PEM, loaded once per process: loading an RSA key checks it (~28 ms for 2048
    bits), which signing every outgoing request would otherwise pay each time."""
    return serialization.load_pem_private_key(key_pem, password=None)


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"identity name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def signature_algorithm(key_pem: bytes) -> str:
    """The XML-DSig algorithm for a private key: RSA-SHA256, or ECDSA-SHA256 for EC keys."""
    key = private_key(key_pem)
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
    tls: bool = True,
) -> x509.Certificate:
    """A certificate; ``tls=False`` for a signing-only one (key usage, no extended key usage)."""
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
    elif not tls:
        builder = builder.add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
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

    # the identity provider's certificate is its own (self-signed, for signing only): pinned as the
    # issuer's in [[trust.issuer]], and no institution's CA vouches for it, nor it for them
    idp_key = _new_key(algorithm, key_size)
    idp_subject = _name("idp", "XDS development identity provider")
    idp = save(
        "idp", _issue(idp_subject, idp_key, idp_subject, idp_key, ca=False, days=days, tls=False), idp_key
    )
    members = {_safe(n): leaf(_safe(n), n) for n in institutions}
    return KeySet(folder, ca, idp, members)


MIN_RSA_BITS = 2048
STRONG_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_WEAK_HASHES = ("md5", "sha1", "sha224")


class UntrustedCertificate(Exception):
    """The certificate is not acceptable for the role it is presented in; the message says why."""


def check_strength(cert: x509.Certificate, *, self_signed: bool = False) -> None:
    """RSA keys of at least 2048 bits, EC keys on P-256 or larger, signed with SHA-256 or stronger."""
    key = cert.public_key()
    subject = cert.subject.rfc4514_string()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise UntrustedCertificate(f"{subject}: RSA-{key.key_size} is weaker than RSA-{MIN_RSA_BITS}")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in STRONG_CURVES:
        raise UntrustedCertificate(f"{subject}: curve {key.curve.name} is weaker than P-256")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise UntrustedCertificate(f"{subject}: only RSA and EC keys sign here")
    algorithm = cert.signature_hash_algorithm
    if not self_signed and (algorithm is None or algorithm.name in _WEAK_HASHES):
        raise UntrustedCertificate(f"{subject}: signed with {algorithm.name if algorithm else 'no hash'}")


def _signing_key_usage(policy: object, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise ValueError("key usage allows neither digitalSignature nor nonRepudiation")


def _read_files(paths: tuple[str, ...]) -> tuple[tuple[str, float, int], ...]:
    stamps = []
    for path in paths:
        st = os.stat(path)
        stamps.append((path, st.st_mtime, st.st_size))
    return tuple(stamps)


@functools.lru_cache(maxsize=32)
def _anchor_store(files: tuple[tuple[str, float, int], ...]) -> tuple[Store, tuple[x509.Certificate, ...]]:
    anchors: list[x509.Certificate] = []
    for path, *_ in files:
        anchors += load_certificates(path)
    return Store(anchors), tuple(anchors)


@functools.lru_cache(maxsize=32)
def _revocation_lists(
    files: tuple[tuple[str, float, int], ...],
) -> tuple[x509.CertificateRevocationList, ...]:
    lists = []
    for path, *_ in files:
        data = Path(path).read_bytes()
        if b"-----BEGIN" in data:
            lists.append(x509.load_pem_x509_crl(data))
        else:
            lists.append(x509.load_der_x509_crl(data))
    return tuple(lists)


class TrustAnchors:
    """The anchors of one role of trust (institutions' signatures, or TLS clients) with revocation.

    RFC 5280 path validation by ``cryptography``. For XML-signature certificates (``purpose``
    ``"signature"``) the end entity needs no subjectAltName and no extended key usage — those are
    TLS rules — but its key usage, when present, must allow digitalSignature or nonRepudiation.
    Every certificate of the path must have a strong key (:func:`check_strength`); a certificate
    listed in a configured CRL (``crl_files``, PEM or DER, signed by the certificate's issuer) is
    refused. Anchor and CRL files are re-read when they change, not per request.
    """

    def __init__(
        self, files: list[str] | tuple[str, ...], crl_files: list[str] | tuple[str, ...] = ()
    ) -> None:
        self.files = tuple(str(f) for f in files)
        self.crl_files = tuple(str(f) for f in crl_files)

    def verify(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> list[x509.Certificate]:
        """The validated path, leaf first; :class:`UntrustedCertificate` otherwise."""
        if not self.files:
            raise UntrustedCertificate("no trust anchors are configured for this role")
        check_strength(leaf)  # first, so that a weak key is named as such
        store, _ = _anchor_store(_read_files(self.files))
        policies = {
            "ca_policy": ExtensionPolicy.webpki_defaults_ca(),
            "ee_policy": ExtensionPolicy.permit_all().may_be_present(
                x509.KeyUsage, Criticality.AGNOSTIC, _signing_key_usage
            ),
        }
        try:
            verified = (
                PolicyBuilder().store(store).extension_policies(**policies).build_client_verifier()
            ).verify(leaf, intermediates)
        except VerificationError as exc:
            raise UntrustedCertificate(f"the certificate does not chain to a trust anchor: {exc}") from None
        chain = list(verified.chain)
        for i, cert in enumerate(chain):
            check_strength(cert, self_signed=i == len(chain) - 1)
        self._check_revocation(chain)
        return chain

    def _check_revocation(self, chain: list[x509.Certificate]) -> None:
        if not self.crl_files:
            return
        lists = _revocation_lists(_read_files(self.crl_files))
        for cert, issuer in zip(chain, chain[1:], strict=False):
            for crl in lists:
                if crl.issuer != cert.issuer or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    continue
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    raise UntrustedCertificate(f"{cert.subject.rfc4514_string()} is revoked")


def verify_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    ca_pem_file: str | Path | list[str] | tuple[str, ...],
) -> None:
    """The certificate chains to one of the trust anchors (one PEM file or several), strong, valid now."""
    paths = [str(ca_pem_file)] if isinstance(ca_pem_file, str | Path) else [str(p) for p in ca_pem_file]
    TrustAnchors(paths).verify(leaf, intermediates)
