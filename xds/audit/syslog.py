"""Audit records to a syslog collector (ITI TF-2a §3.20.4.1.1 Record Audit Event, syslog transport).

Messages are RFC 5424: ``<85>1 TIMESTAMP HOSTNAME xds PROCID IHE+RFC-3881 - BOM<AuditMessage…>``
— facility 10 (security/authorization), severity 5 (notice), MSGID ``IHE+RFC-3881`` as ITI TF-2a
§3.20.6.1 requires, the XML as MSG-UTF8. Transports:

- ``udp://HOST:PORT`` — RFC 5426, one message per datagram (no delivery guarantee: UDP has none;
  a message larger than a datagram can carry, ~64 kB, e.g. a query with long parameters, is not
  sent there);
- ``tls://HOST:PORT`` — RFC 5425, TLS with octet-counting framing (``LEN SP MSG``), the collector's
  certificate checked against ``ca_file`` (the system's anchors when none), a client certificate
  when ``cert_file`` is given;
- ``tcp://HOST:PORT`` — the same framing without TLS (RFC 6587 octet counting), for a collector on
  the same host.

A connection the collector closed is noticed before the next batch (a readable socket that reads
empty) so events are not written into a dead connection.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from xds.audit.trail import Record

PRI = 10 * 8 + 5  # authpriv.notice
MSGID = "IHE+RFC-3881"
BOM = "\ufeff"
APP_NAME = "xds"
log = logging.getLogger("xds.audit")


def rfc5424(record: Record, hostname: str, app: str = APP_NAME) -> bytes:
    """The RFC 5424 syslog message for one audit record."""
    header = f"<{PRI}>1 {record.time} {hostname or '-'} {app} {os.getpid()} {MSGID} - "
    return (header + BOM + record.xml).encode("utf-8")


def parse_targets(text: str) -> list[str]:
    """``udp://h:p, tls://h:p`` -> the targets, each checked."""
    targets = [t.strip() for t in text.split(",") if t.strip()]
    for t in targets:
        parts = urlsplit(t)
        if parts.scheme not in ("udp", "tls", "tcp") or not parts.hostname or not parts.port:
            raise ValueError(
                f"audit syslog target {t!r}: use udp://HOST:PORT, tls://HOST:PORT or tcp://HOST:PORT"
            )
    return targets


class SyslogSink:
    """One syslog collector."""

    def __init__(
        self,
        target: str,
        *,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(target)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or 0
        self.name = f"syslog-{self.scheme}-{self.host}-{self.port}".replace(":", "_")
        self.timeout = timeout
        self.hostname = socket.gethostname()
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLContext | None = None
        if self.scheme == "tls":
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file or None)
            self._tls = ctx

    def deliver(self, records: Sequence[Record]) -> None:
        messages = [rfc5424(r, self.hostname) for r in records]
        if self.scheme == "udp":
            sock = self._connect()
            for msg in messages:
                try:
                    sock.send(msg)
                except OSError as exc:
                    if exc.errno != errno.EMSGSIZE:
                        raise
                    # one datagram cannot carry it (RFC 5426 §3.2); sent again it never would, and
                    # the events after it would wait behind it for good
                    log.warning(
                        "an audit message of %d bytes does not fit in a UDP datagram to %s:%d; "
                        "it is not sent there (the other sinks have it)",
                        len(msg),
                        self.host,
                        self.port,
                    )
            return
        data = b"".join(b"%d %s" % (len(msg), msg) for msg in messages)
        sock = self._connect()
        try:
            sock.sendall(data)
        except OSError:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        if self._sock is not None and self.scheme != "udp" and _closed_by_peer(self._sock):
            self.close()
        if self._sock is None:
            if self.scheme == "udp":
                family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family[0], socket.SOCK_DGRAM)
                sock.connect(family[4])
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                if self._tls is not None:
                    sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the collector closed the connection (or reset it)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        if isinstance(sock, ssl.SSLSocket):
            sock.setblocking(False)
            try:
                return sock.recv(1) == b""
            except ssl.SSLWantReadError:
                return False
            finally:
                sock.setblocking(True)
                sock.settimeout(5.0)
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
