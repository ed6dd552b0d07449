"""HL7 v2 Minimal Lower Layer Protocol (MLLP): the transport of the ITI-8 Patient Identity Feed.

IHE ITI TF-2 §3.8 sends HL7 v2.5 messages over MLLP (ITI TF-2 Appendix C.2; HL7 v2.5 Implementation
Guide, Appendix C "Lower Layer Protocols", §C.4 MLLP). Each message is framed as
``<VT> message <FS><CR>`` — start block 0x0B, end block 0x1C 0x0D — and a connection carries any
number of messages, each answered (with an ACK) before the next one is read.

The server hands every message, without its framing, to a synchronous handler in a worker thread
and sends its answer back framed, as UTF-8. A message larger than :data:`MAX_MESSAGE_BYTES`, or
bytes outside a frame, close that connection; the server keeps serving others. So do a frame left
unfinished for :data:`FRAME_TIMEOUT` seconds and a connection silent for :data:`IDLE_TIMEOUT`; at
most :data:`MAX_CONNECTIONS` are served at once (a feed has a few senders, each keeping one open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_MESSAGE_BYTES = 1024 * 1024
FRAME_TIMEOUT = 30.0  # seconds a started frame may take to be completed
IDLE_TIMEOUT = 3600.0  # seconds a connection may stay silent between messages
MAX_CONNECTIONS = 64
_READ_SIZE = 64 * 1024

log = logging.getLogger("xds.feed")


def frame(message: str) -> bytes:
    """``message`` encoded as UTF-8 in an MLLP block (HL7 v2.5 Appendix C §C.4.2)."""
    return START_BLOCK + message.encode("utf-8") + END_BLOCK


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Callable[[bytes], str]
) -> None:
    peer = writer.get_extra_info("peername")
    buffer = bytearray()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(
                    reader.read(_READ_SIZE), FRAME_TIMEOUT if buffer else IDLE_TIMEOUT
                )
            except TimeoutError:
                state = "an unfinished frame" if buffer else "no message"
                log.warning("MLLP %s: %s for too long; closing the connection", peer, state)
                return
            if not chunk:
                return
            buffer += chunk
            while buffer:
                if buffer[:1] in (b"\r", b"\n"):  # line ends some senders put after a frame
                    del buffer[:1]
                    continue
                if buffer[:1] != START_BLOCK:
                    log.warning("MLLP %s: bytes outside a frame; closing the connection", peer)
                    return
                end = buffer.find(END_BLOCK, 1)
                if end < 0:
                    # Still incomplete; the last byte may be the first half of the end block.
                    if len(buffer) - 2 > MAX_MESSAGE_BYTES:
                        log.warning("MLLP %s: message over %d bytes; closing", peer, MAX_MESSAGE_BYTES)
                        return
                    break
                message = bytes(buffer[1:end])
                del buffer[: end + len(END_BLOCK)]
                if len(message) > MAX_MESSAGE_BYTES:
                    log.warning("MLLP %s: message over %d bytes; closing", peer, MAX_MESSAGE_BYTES)
                    return
                answer = await asyncio.to_thread(handler, message)
                writer.write(frame(answer))
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    except Exception:
        log.exception("MLLP %s: the connection failed", peer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve_mllp(host: str, port: int, handler: Callable[[bytes], str]) -> asyncio.AbstractServer:
    """Listen for MLLP connections on ``host:port``; answer each message with ``handler(message)``.

    ``SO_REUSEPORT`` is set where the platform has it, so that several worker processes can share
    the port (the kernel spreads connections over them).
    """

    active = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            log.warning("MLLP: %d connections open already; refusing another", active)
            writer.close()
            return
        active += 1
        try:
            await _serve_connection(reader, writer, handler)
        finally:
            active -= 1

    reuse_port = hasattr(socket, "SO_REUSEPORT")
    return await asyncio.start_server(on_connect, host, port, reuse_port=reuse_port or None)


def send_mllp(host: str, port: int, message: str, timeout: float = 10.0) -> str:
    """Send one HL7 v2 message over MLLP and return the framed answer, decoded (blocking).

    Segments may be separated by ``\\r``, ``\\n`` or ``\\r\\n``; they are sent separated by ``\\r``
    (HL7 v2.5 §2.5.2). ``timeout`` bounds the whole exchange; raises OSError (``TimeoutError``,
    ``ConnectionError``) when it fails.
    """
    text = message.replace("\r\n", "\r").replace("\n", "\r")
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(frame(text))
        received = bytearray()
        while True:
            end = received.find(END_BLOCK)
            if end >= 0:
                break
            if len(received) > MAX_MESSAGE_BYTES + 1:
                raise ConnectionError(f"MLLP answer from {host}:{port} exceeds {MAX_MESSAGE_BYTES} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete MLLP answer from {host}:{port} within {timeout}s")
            sock.settimeout(remaining)
            chunk = sock.recv(_READ_SIZE)
            if not chunk:
                raise ConnectionError(f"{host}:{port} closed the connection before a complete answer")
            received += chunk
    start = received.find(START_BLOCK)
    if start < 0 or start > end:
        raise ConnectionError(f"MLLP answer from {host}:{port} has no start block")
    return _decode(bytes(received[start + 1 : end]))
