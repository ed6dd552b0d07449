"""The request head's bound: uvicorn's HTTP/1.1 protocol refusing an endless request line or headers.

uvicorn's httptools protocol sets no limit of its own on the request head: llhttp hands it the URL
and each header as they complete, and until they do, ``httptools`` gathers them in memory — a
client could send a gigabyte of one header (or of a request line) and the worker would hold it all.
:class:`BoundedHttpToolsProtocol` counts the bytes received while a request's head is incomplete
and, past :data:`MAX_HEAD_BYTES`, answers 431 Request Header Fields Too Large (RFC 6585 §5) and
closes the connection; the worker goes on serving everyone else. The bound is generous for what the
service's clients send (a signed SAML assertion in an ``Authorization`` header is some 10 kB).
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024

log = logging.getLogger("xds.http")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request's line and headers."""

    _in_head = True  # a connection begins with a request head
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def _refuse_head(self) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("%s sent a request head over %d bytes: 431, connection closed", client, MAX_HEAD_BYTES)
        reason = f"the request line and headers exceed {MAX_HEAD_BYTES // 1024} kB\n".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(reason), reason)
        )
        self.transport.close()
