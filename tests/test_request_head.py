"""An endless request line or header block is refused with 431 and its connection closed, whatever
the pieces it arrives in, by ``xds serve`` itself (two workers); ordinary heads, an assertion-sized
header among them, are served, and so is everyone else meanwhile (xds.http_head)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from operating import start_server

from xds.http_head import MAX_HEAD_BYTES


def _answer(port: int, pieces: list[bytes]) -> bytes:
    """Send ``pieces`` one by one (stopping if the server closes), then read what it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


@pytest.mark.parametrize(
    "head",
    [
        [b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: "] + [b"p" * 4096] * 64,  # one endless header
        [b"GET /health HTTP/1.1\r\nHost: x\r\n"] + [b"X-%d: v\r\n" % i for i in range(20_000)],  # many
        [b"GET /"] + [b"a" * 4096] * 64,  # an endless request line
        [b"POST /registry HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (2 * MAX_HEAD_BYTES)],  # one piece
    ],
    ids=["one-header", "many-headers", "request-line", "single-piece"],
)
def test_an_endless_head_is_refused_and_the_server_goes_on(
    tmp_path: Path, database_url: str, head: list[bytes]
) -> None:
    with start_server(tmp_path / "data", database_url, args=("--workers", "2")) as server:
        answer = _answer(server.port, head)
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
        assert b"connection: close" in answer
        # an ordinary request, with a header the size of a signed SAML assertion, is served
        big = {"X-Assertion": "A" * 20_000}
        for _ in range(4):  # (each worker)
            assert httpx.get(f"{server.url}/health", headers=big, timeout=10).status_code == 200
        assert "sent a request head over" in server.log.read_text()
