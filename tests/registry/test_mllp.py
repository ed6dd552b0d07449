"""MLLP framing over real loopback sockets (HL7 v2.5 Appendix C §C.4; ITI TF-2 §3.8)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support import free_port

from xds.registry.mllp import END_BLOCK, MAX_MESSAGE_BYTES, START_BLOCK, frame, send_mllp, serve_mllp

HOST = "127.0.0.1"


def echo(raw: bytes) -> str:
    """Answer with the message text, upper-cased, so a test can tell answer from question."""
    return "ACK:" + raw.decode("utf-8").upper()


@pytest.fixture
def mllp_port() -> Iterator[int]:
    """An MLLP server running the echo handler in its own event loop thread."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, asyncio.AbstractServer] = {}

    async def start() -> None:
        holder["server"] = await serve_mllp(HOST, port, echo)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=5)
    assert started.wait(5)
    try:
        yield port
    finally:

        async def stop() -> None:
            holder["server"].close()
            await holder["server"].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _read_frame(sock: socket.socket) -> bytes:
    """One framed answer, read a byte at a time so the next answer stays in the socket."""
    data = bytearray()
    while not data.endswith(END_BLOCK):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed")
        data += byte
    assert data[:1] == START_BLOCK
    return bytes(data[1 : data.index(END_BLOCK)])


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (EOF or reset) without sending an answer."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_send_mllp_round_trip(mllp_port: int) -> None:
    answer = send_mllp(HOST, mllp_port, "MSH|a\nPID|b\r\nEVN|c", timeout=5)
    assert answer == "ACK:MSH|A\rPID|B\rEVN|C"


def test_round_trip_utf8(mllp_port: int) -> None:
    assert send_mllp(HOST, mllp_port, "PID|Ærlig^Øystein", timeout=5) == "ACK:PID|ÆRLIG^ØYSTEIN"


def test_several_messages_on_one_connection(mllp_port: int) -> None:
    with socket.create_connection((HOST, mllp_port), timeout=5) as sock:
        # Two frames in one write, then a third split across writes.
        sock.sendall(frame("one") + frame("two"))
        assert _read_frame(sock) == b"ACK:ONE"
        assert _read_frame(sock) == b"ACK:TWO"
        sock.sendall(START_BLOCK + b"thr")
        sock.sendall(b"ee\x1c")
        sock.sendall(b"\x0d")
        assert _read_frame(sock) == b"ACK:THREE"


def test_oversized_message_closes_connection_only(mllp_port: int) -> None:
    with socket.create_connection((HOST, mllp_port), timeout=10) as sock:
        sock.sendall(START_BLOCK + b"x" * (MAX_MESSAGE_BYTES + 10))
        assert _closed(sock)
    assert send_mllp(HOST, mllp_port, "after", timeout=5) == "ACK:AFTER"


def test_oversized_complete_frame_closes_connection(mllp_port: int) -> None:
    with socket.create_connection((HOST, mllp_port), timeout=10) as sock:
        try:
            sock.sendall(frame("y" * (MAX_MESSAGE_BYTES + 1)))
        except ConnectionError:
            pass
        assert _closed(sock)
    assert send_mllp(HOST, mllp_port, "still", timeout=5) == "ACK:STILL"


def test_bytes_outside_a_frame_close_connection(mllp_port: int) -> None:
    with socket.create_connection((HOST, mllp_port), timeout=5) as sock:
        sock.sendall(frame("ok"))
        assert _read_frame(sock) == b"ACK:OK"
        sock.sendall(b"garbage" + frame("lost"))
        assert _closed(sock)
    assert send_mllp(HOST, mllp_port, "again", timeout=5) == "ACK:AGAIN"


def test_send_mllp_times_out_without_answer() -> None:
    port = free_port()
    with socket.create_server((HOST, port)) as listener:
        listener.settimeout(5)

        def accept_and_hold() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                threading.Event().wait(1.5)

        t = threading.Thread(target=accept_and_hold, daemon=True)
        t.start()
        with pytest.raises(OSError):
            send_mllp(HOST, port, "MSH|x", timeout=0.5)
        t.join(5)


def test_handler_failure_closes_connection_but_server_keeps_serving() -> None:
    port = free_port()

    def flaky(raw: bytes) -> str:
        if raw == b"boom":
            raise RuntimeError("handler failed")
        return "fine"

    async def scenario() -> None:
        server = await serve_mllp(HOST, port, flaky)
        try:
            bad = await asyncio.to_thread(_send_raw, port, frame("boom"))
            assert bad == b""
            assert await asyncio.to_thread(send_mllp, HOST, port, "ok", 5) == "fine"
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def _send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(data)
        out = bytearray()
        while chunk := sock.recv(4096):
            out += chunk
        return bytes(out)


def test_line_ends_after_a_frame_are_tolerated(mllp_port: int) -> None:
    with socket.create_connection((HOST, mllp_port), timeout=5) as sock:
        sock.sendall(frame("one") + b"\r\n" + frame("two") + b"\n")
        assert _read_frame(sock) == b"ACK:ONE"
        assert _read_frame(sock) == b"ACK:TWO"


def test_unfinished_frames_and_silent_connections_are_closed(
    mllp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender holding a started frame (or saying nothing) does not keep its connection, and
    the memory of what it sent, for good."""
    import xds.registry.mllp as mllp

    monkeypatch.setattr(mllp, "FRAME_TIMEOUT", 0.3)
    monkeypatch.setattr(mllp, "IDLE_TIMEOUT", 0.6)
    with socket.create_connection((HOST, mllp_port), timeout=5) as partial:
        partial.sendall(START_BLOCK + b"half a message")
        with socket.create_connection((HOST, mllp_port), timeout=5) as silent:
            assert _closed(partial)  # within the socket timeout: closed by the server
            assert _closed(silent)
    assert send_mllp(HOST, mllp_port, "after", timeout=5) == "ACK:AFTER"


def test_connections_past_the_limit_are_refused(mllp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import xds.registry.mllp as mllp

    monkeypatch.setattr(mllp, "MAX_CONNECTIONS", 2)
    first = socket.create_connection((HOST, mllp_port), timeout=5)
    second = socket.create_connection((HOST, mllp_port), timeout=5)
    try:
        first.sendall(frame("a"))
        second.sendall(frame("b"))
        assert _read_frame(first) == b"ACK:A" and _read_frame(second) == b"ACK:B"
        with socket.create_connection((HOST, mllp_port), timeout=5) as third:
            assert _closed(third)
    finally:
        first.close()
        second.close()
    time.sleep(0.2)  # the server notices the two are gone
    assert send_mllp(HOST, mllp_port, "after", timeout=5) == "ACK:AFTER"
