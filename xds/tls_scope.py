"""The ASGI TLS extension (``scope["extensions"]["tls"]``) on uvicorn's HTTP protocol.

uvicorn does not put the TLS session in the request scope; this protocol adds, for each request
on a TLS connection, the fields of the ASGI TLS extension the service uses: ``client_cert_chain``
(the verified client certificate, PEM), ``client_cert_name`` (its subject, RFC 4514) and
``tls_version``. ``ServerConfig.uvicorn_protocol`` selects it whenever the server speaks HTTPS.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from xds.http_head import BoundedHttpToolsProtocol


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any] | None:
    """The ASGI TLS extension's fields for one TLS session (None when the connection is plain)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    name = None
    if der:
        from cryptography import x509

        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": ssl_object.version(),
        "cipher_suite": None,
        "server_cert": None,
    }


class TlsHttpToolsProtocol(BoundedHttpToolsProtocol):
    """The service's HTTP protocol (a bounded request head) with the ASGI TLS extension in every
    request's scope."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = tls_extension(transport.get_extra_info("ssl_object"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[typeddict-unknown-key]
