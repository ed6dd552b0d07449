"""A real rsyslog for the audit tests: UDP (RFC 5426), plain TCP and TLS (RFC 5425, gtls) on loopback.

Each collector runs ``rsyslogd -n`` with its own configuration and writes what it receives in
RFC 5424 form (RSYSLOG_SyslogProtocol23Format) to ``audit.log``; it can be stopped and started
again on the same ports. Without rsyslogd (or its gtls driver, for TLS) the tests skip outside CI
and fail in CI, where .ci/run installs both.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import free_port

GTLS_DRIVERS = [
    Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"),
    Path("/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so"),
    Path("/usr/lib/rsyslog/lmnsd_gtls.so"),
]


def require_rsyslog(tls: bool = False) -> str:
    binary = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else "")
    missing = ""
    if not binary:
        missing = "rsyslogd is not installed (apt-get install rsyslog)"
    elif tls and not any(p.exists() for p in GTLS_DRIVERS):
        missing = "rsyslog's TLS driver is not installed (apt-get install rsyslog-gnutls)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return binary


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


class Rsyslog:
    """One rsyslogd listening on 127.0.0.1: ``udp_port``, ``tcp_port`` and (with tls) ``tls_port``."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        self.binary = require_rsyslog(tls)
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "audit.log"
        self.udp_port, self.tcp_port = free_port(), free_port()
        self.tls_port = free_port() if tls else 0
        self.ca = None
        lines = [
            'global(maxMessageSize="256k")',
            f'global(workDirectory="{self.dir}")',
        ]
        if tls:
            self.ca, cert, key = make_tls_files(self.dir)
            lines.append(
                f'global(DefaultNetstreamDriverCAFile="{self.ca}" DefaultNetstreamDriverCertFile="{cert}" '
                f'DefaultNetstreamDriverKeyFile="{key}")'
            )
        lines += [
            'module(load="imudp")',
            'module(load="imtcp" maxSessions="100")',
            f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}")',
            f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}")',
        ]
        if tls:
            lines.append(
                f'input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" streamDriver.name="gtls" '
                'streamDriver.mode="1" streamDriver.authMode="anon")'
            )
        lines.append(f'*.* action(type="omfile" file="{self.log}" template="RSYSLOG_SyslogProtocol23Format")')
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Rsyslog:
        self.proc = subprocess.Popen(
            [self.binary, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "rsyslogd.err", "ab"),  # noqa: SIM115
        )
        import socket

        deadline = time.monotonic() + 15
        ports = [p for p in (self.tcp_port, self.tls_port) if p]
        while ports:
            if self.proc.poll() is not None:
                raise RuntimeError("rsyslogd exited: " + (self.dir / "rsyslogd.err").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", ports[0]), timeout=0.5):
                    ports.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("rsyslogd did not listen") from None
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def messages(self) -> list[str]:
        """The audit messages received so far (each line's XML), in arrival order."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text("utf-8", "replace").splitlines():
            at = line.find("<AuditMessage")
            if at >= 0:
                out.append(line[at:])
        return out

    def lines(self) -> list[str]:
        return self.log.read_text("utf-8", "replace").splitlines() if self.log.exists() else []

    def wait_for(self, count: int, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages()
            if len(got) >= count:
                return got
            time.sleep(0.1)
        return self.messages()
