"""The relay's own HTTP/1.1 client: one POST, its answer handed on in the pieces the socket gives.

An ITI-39 answer relayed to an unsigned consumer (:mod:`xds.gateway.relay`, ITI TF-2b §3.39.4.2)
passes through the initiating gateway byte for byte. Read through httpx, every 64 kB of it went
through six layers of the client (connection pool, HTTP/1.1 state machine, anyio stream, a timeout
scope per read), and the gateway spent twice the CPU of the repository that sent it. Here the answer
is read by an :class:`asyncio.Protocol` that feeds the bytes to ``httptools`` (the llhttp parser
uvicorn uses for the server side) and queues the body as the event loop hands it over: at most one
copy of each byte in this process, up to 256 kB at a time.

What it does not do, the gateway leaves to httpx (:func:`usable`): proxies named by the
environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and anything but
``http``/``https``. It sends no ``Accept-Encoding``, so the answer comes as sent; an answer with a
content coding anyway is refused. Connections are kept for the next exchange with the same
community (up to :data:`IDLE_PER_HOST` of them, each for :data:`IDLE_S`), TLS ones included.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator

import httptools
import httpx

MAX_HEAD = 64 * 1024  # bytes of the answer's status line and headers
HIGH_WATER = 4 * 1024 * 1024  # body bytes queued before the socket is no longer read
LOW_WATER = 1024 * 1024  # ... and read again below this
_PIECE_COST = 64  # bytes a queued piece costs beyond its own (the bytes object, the deque slot)
IDLE_PER_HOST = 8
IDLE_S = 4.0  # an idle connection kept this long (servers close theirs after ~5 s: uvicorn's default)


def usable(url: str) -> bool:
    """Whether :class:`WirePool` can send to ``url`` (an http(s) URL no proxy setting applies to)."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return False
    proxies = urllib.request.getproxies_environment()
    if not any(proxies.get(k) for k in (parsed.scheme, "all")):
        return True
    return bool(urllib.request.proxy_bypass_environment(parsed.host, proxies))


class _Answer(asyncio.Protocol):
    """One connection; the answer to the exchange under way, as ``httptools`` parses it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._begin()

    def _begin(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_bytes = 0  # the status line's and headers' bytes, as parsed
        self.unfinished_head = 0  # bytes received while the head was not yet complete
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.body: deque[bytes] = deque()
        self.queued = 0
        self.paused = False
        self.complete = False
        self.framed = True  # the answer says where it ends (Content-Length or chunked)
        self.keep_alive = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes after the answer, before the next request: not used again
            self._discard()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # (after a whole answer: bytes that follow it)
            self._fail(httpx.RemoteProtocolError(f"the answer is not HTTP/1.1: {exc}"))
            return
        if not self.head.done():  # httptools holds an unfinished header whole: bound what it holds
            self.unfinished_head += len(data)
            if self.unfinished_head > MAX_HEAD:
                self._fail(httpx.RemoteProtocolError("the answer's headers are too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.head.done() and not self.framed and self.error is None:
            self.complete = True  # an answer without a length ends where the connection does
            self._wake()
        if not self.complete:
            self._fail(
                httpx.RemoteProtocolError(
                    "the community closed the connection before its answer was complete"
                )
            )

    # --- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer in the same read: none of it is this exchange's
            self._discard()
            raise httptools.HttpParserError("a second answer to one request")  # (stops the parser)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            self._fail(httpx.RemoteProtocolError("the answer's headers are too long"))
            raise httptools.HttpParserError("the answer's headers are too long")  # (stops the parser)
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        names = {name.lower() for name, _ in self.raw_headers}
        self.framed = b"content-length" in names or b"transfer-encoding" in names
        self.keep_alive = self.parser.should_keep_alive()  # (read now: llhttp resets it at the end)
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        # (each piece counts its object too: an answer in one-byte chunks is not held 4 MB pieces deep)
        self.queued += len(body) + _PIECE_COST
        if self.queued > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- the reader's side ----------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = exc
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # (retrieved: a reader that never waits for it is not warned)
        self._wake()
        self._discard()

    def _discard(self) -> None:
        """Close the connection; it is never used again (marked now, not when the loop reports it
        lost, so that a release in between does not keep it)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_body(self) -> bytes | None:
        while not self.body:
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = self.body.popleft()
        self.queued -= len(data) + _PIECE_COST
        if self.paused and self.queued < LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self.keep_alive


class WireResponse:
    """A community's answer: status, headers, and the body as it arrives (httpx.Response's names)."""

    def __init__(self, pool: WirePool, key: tuple[str, str, int], conn: _Answer) -> None:
        self._pool, self._key, self._conn = pool, key, conn
        self.status_code = conn.parser.get_status_code()
        self.headers = httpx.Headers(conn.raw_headers)
        self._released = False

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        while (chunk := await self._conn.next_body()) is not None:
            yield chunk

    aiter_bytes = aiter_raw  # no content coding was asked for, none is accepted

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        self._pool.release(self._key, self._conn)


class WirePool:
    """Connections to the communities, kept between exchanges."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Answer]] = {}

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], tls: ssl.SSLContext | None
    ) -> WireResponse:
        """Send ``body``; the answer once its headers have come (the caller bounds the time)."""
        target = httpx.URL(url)
        scheme, host = target.scheme, target.host
        port = target.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        netloc = f"[{host}]" if ":" in host else host
        if target.port:
            netloc += f":{port}"
        head = f"POST {target.raw_path.decode('ascii')} HTTP/1.1\r\nHost: {netloc}\r\n"
        head += "".join(f"{k}: {val}\r\n" for k, val in headers.items())
        head += f"Content-Length: {len(body)}\r\nUser-Agent: xds-gateway\r\n\r\n"
        message = head.encode("latin-1") + body
        conn = self._reused(key)
        if conn is None:
            loop = asyncio.get_running_loop()
            try:
                _, conn = await loop.create_connection(
                    _Answer,
                    host,
                    port,
                    ssl=tls if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                )
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        assert conn.transport is not None
        try:
            conn.transport.write(message)
            await conn.head
        except BaseException:
            conn.transport.close()
            raise
        response = WireResponse(self, key, conn)
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            await response.aclose()
            raise httpx.DecodingError(
                f"the answer has a content coding ({coding}) this gateway did not ask for"
            )
        return response

    def _reused(self, key: tuple[str, str, int]) -> _Answer | None:
        idle = self._idle.get(key, [])
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S and conn.transport is not None:
                conn._begin()
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    def release(self, key: tuple[str, str, int], conn: _Answer) -> None:
        idle = self._idle.setdefault(key, [])
        if conn.reusable() and len(idle) < IDLE_PER_HOST:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
