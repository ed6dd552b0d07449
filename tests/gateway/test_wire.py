"""The relay's HTTP/1.1 client (xds.gateway.wire) against real sockets: the answer framings HTTP/1.1
allows (Content-Length, chunked, closed connection), kept connections, and answers it must refuse
(cut short, a content coding never asked for, endless headers, not HTTP at all)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import httpx
import pytest

from xds.gateway import wire

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def _exchange(
    handler: Handler, times: int = 1, linger: float = 0.0
) -> tuple[list[bytes], list[bytes], int]:
    """Run ``handler`` as a server on 127.0.0.1 and post to it ``times`` times through one pool,
    holding each answer ``linger`` seconds after reading it: the bodies read, the requests it saw,
    and how many connections it accepted."""
    seen: list[bytes] = []
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # (the client closed the connection)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = wire.WirePool()
    bodies = []
    try:
        for _ in range(times):
            response = await pool.post(
                f"http://127.0.0.1:{port}/xca/retrieve?x=1", b"<request/>", {"Content-Type": "text/xml"}, None
            )
            assert response.status_code == 200
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            await asyncio.sleep(linger)
            await response.aclose()
            bodies.append(body)
    finally:
        pool.close()
        server.close()
    return bodies, seen, accepted


def _keep_alive(answers: list[bytes], seen: list[bytes] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            request = await _request(reader)
            if seen is not None:
                seen.append(request)
            writer.write(answer)
            await writer.drain()

    return handler


def test_a_content_length_answer_is_read_and_its_connection_kept() -> None:
    big = bytes(range(256)) * 40_000  # 10 MB: read in many pieces, the socket paused and resumed
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    seen: list[bytes] = []
    bodies, _, accepted = asyncio.run(_exchange(_keep_alive([answer, answer], seen), times=2))
    assert bodies == [big, big]
    assert accepted == 1  # the second exchange went over the first one's connection
    assert seen[0].startswith(b"POST /xca/retrieve?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 10\r\n" in seen[0] and seen[0].endswith(b"\r\n\r\n<request/>")
    assert b"accept-encoding" not in seen[0].lower()


def test_a_chunked_answer_is_read_whole() -> None:
    chunks = [b"A" * 70_000, b"B" * 5, b"C" * 300_000]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    bodies, _, _ = asyncio.run(_exchange(_keep_alive([answer])))
    assert bodies == [b"".join(chunks)]


def test_an_answer_ended_by_closing_the_connection_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 100_000)
        await writer.drain()

    bodies, _, _ = asyncio.run(_exchange(handler, times=2))
    assert bodies == [b"z" * 100_000] * 2  # (and the closed connection is not used again)


def test_an_answer_cut_short_is_an_error_not_a_shorter_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400)
        await writer.drain()

    with pytest.raises(httpx.RemoteProtocolError, match="before its answer was complete"):
        asyncio.run(_exchange(handler))


@pytest.mark.parametrize(
    "answer, error, reason",
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(gzip.compress(b"x")), gzip.compress(b"x")),
            httpx.DecodingError,
            "content coding",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70_000 + b"\r\n\r\n",
            httpx.RemoteProtocolError,
            "headers are too long",
        ),
        (  # refused as it grows, not held whole until the community stops
            b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 10_000_000,
            httpx.RemoteProtocolError,
            "headers are too long",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", httpx.RemoteProtocolError, "not HTTP/1.1"),
    ],
    ids=["content-coding", "long-headers", "endless-header", "not-http"],
)
def test_answers_it_must_not_take_are_refused(answer: bytes, error: type[Exception], reason: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(answer)
        try:
            await writer.drain()
        except ConnectionError:
            return  # (refused while it was being sent)
        await asyncio.sleep(0.2)  # (bytes after the answer arrive while the connection is open)

    with pytest.raises(error, match=reason):
        asyncio.run(_exchange(handler, times=2))


@pytest.mark.parametrize("apart", [False, True], ids=["same-read", "later-read"])
def test_bytes_after_an_answer_end_its_connection(apart: bool) -> None:
    """The answer is whole as its Content-Length says; what follows it is no answer to anything,
    so the connection it came on is closed, never used for the next exchange."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
            if apart:
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEXTRA")
            await writer.drain()

    # (lingering, the stray answer arrives while the first is held)
    bodies, _, accepted = asyncio.run(_exchange(handler, times=2, linger=0.1))
    assert bodies == [b"abc", b"abc"] and accepted == 2


def test_a_refused_connection_is_a_connect_error() -> None:
    async def post() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await wire.WirePool().post(f"http://127.0.0.1:{port}/", b"", {}, None)

    with pytest.raises(httpx.ConnectError):
        asyncio.run(post())


def test_urls_a_proxy_setting_applies_to_are_left_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert wire.usable("https://hospital.example/xca/retrieve")
    assert not wire.usable("ftp://hospital.example/")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not wire.usable("https://hospital.example/xca/retrieve")
    assert wire.usable("http://hospital.example/xca/retrieve")
    monkeypatch.setenv("NO_PROXY", "hospital.example")
    assert wire.usable("https://hospital.example/xca/retrieve")


@pytest.mark.parametrize("trusted", [True, False])
def test_answers_come_over_mutual_tls_from_a_server_under_the_community_ca(tmp_path, trusted: bool) -> None:  # type: ignore[no-untyped-def]
    """As communities run it: HTTPS, the server's certificate checked against the community's CA
    (and its host name), this gateway's own certificate presented; the connection is kept."""
    import ssl

    from xds.trust.keys import init_keys

    keys = init_keys(tmp_path / "keys", ["community", "gateway"])
    other = init_keys(tmp_path / "other", ["community"])  # a CA the gateway does not trust
    server_ids = keys if trusted else other
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(keys.ca.cert_path))
    server_tls.load_cert_chain(
        server_ids.institutions["community"].cert_path, server_ids.institutions["community"].key_path
    )
    server_tls.verify_mode = ssl.CERT_REQUIRED
    client_tls = ssl.create_default_context(cafile=str(keys.ca.cert_path))
    client_tls.load_cert_chain(keys.institutions["gateway"].cert_path, keys.institutions["gateway"].key_path)
    body = b"<answer/>" * 50_000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    peers: list[object] = []

    async def run() -> tuple[list[bytes], int]:
        accepted = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            peers.append(writer.get_extra_info("peercert"))
            try:
                for _ in range(2):
                    await _request(reader)
                    writer.write(answer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        pool = wire.WirePool()
        bodies = []
        try:
            for _ in range(2):
                response = await pool.post(f"https://127.0.0.1:{port}/xca/retrieve", b"<r/>", {}, client_tls)
                bodies.append(b"".join([c async for c in response.aiter_raw()]))
                await response.aclose()
        finally:
            pool.close()
            server.close()
        return bodies, accepted

    if not trusted:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(run())
        return
    bodies, accepted = asyncio.run(run())
    assert bodies == [body, body] and accepted == 1
    assert peers and peers[0]  # the gateway presented its certificate


def test_an_answer_in_one_byte_chunks_is_read_whole_with_the_socket_paused_meanwhile() -> None:
    """A chunked answer of 300,000 one-byte chunks: its pieces count their own weight, so the
    queue stops the socket long before it holds them all (and all of them still arrive)."""
    body = b"".join(b"1\r\n%c\r\n" % (65 + i % 26) for i in range(300_000)) + b"0\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    expected = bytes(65 + i % 26 for i in range(300_000))
    paused: list[int] = []

    async def run() -> list[bytes]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _request(reader)
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = wire.WirePool()
        response = await pool.post(f"http://127.0.0.1:{port}/", b"", {}, None)
        await asyncio.sleep(0.5)  # nobody reads: the queue fills to its mark and the socket pauses
        conn = response._conn
        paused.append(len(conn.body))
        assert conn.paused
        got = [c async for c in response.aiter_raw()]
        await response.aclose()
        pool.close()
        server.close()
        return got

    got = asyncio.run(run())
    assert b"".join(got) == expected
    assert paused[0] < 300_000 and paused[0] * wire._PIECE_COST <= wire.HIGH_WATER * 2
