"""The audit spool: every event is appended to a file before any sink sees it.

Each process appends to its own segment file (``<pid>-<random>.seg``) under the spool directory
and holds an exclusive ``flock`` on it while it lives. A record is written with one ``write`` call
(length, CRC-32, bytes), so once :meth:`Journal.append` returns the event survives the process
being killed (``kill -9``): the kernel holds it. Each sink has its own cursor per segment
(``<segment>.<sink>``), moved only after the sink took the records, so a sink that is down simply
falls behind and catches up when it returns. A segment whose owner is gone (its lock can be taken)
is adopted by the next process that looks and drained like its own; a segment every sink has read
to the end is removed.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

_HEAD = struct.Struct(">II")  # length, crc32
SEGMENT_BYTES = 16 * 1024 * 1024
LOOK_EVERY_S = 5.0  # how often the spool directory is searched for segments of dead processes


class Segment:
    """One segment file, opened for reading (and for appending when it is this process's own)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd  # holds the flock
        self.cursors: dict[str, int] = {}
        self.cursor_fds: dict[str, int] = {}

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def cursor(self, sink: str) -> int:
        if sink not in self.cursors:
            fd = os.open(f"{self.path}.{sink}", os.O_RDWR | os.O_CREAT, 0o600)
            self.cursor_fds[sink] = fd
            text = os.pread(fd, 32, 0).strip(b"\0 \n")
            self.cursors[sink] = int(text) if text.isdigit() else 0
        return self.cursors[sink]

    def advance(self, sink: str, offset: int) -> None:
        self.cursor(sink)
        os.pwrite(self.cursor_fds[sink], f"{offset:020d}\n".encode(), 0)
        self.cursors[sink] = offset

    def read(self, sink: str, limit: int) -> tuple[list[bytes], int]:
        """Up to ``limit`` whole records after the sink's cursor, and the offset after them."""
        offset = self.cursor(sink)
        size = self.size()
        out: list[bytes] = []
        while len(out) < limit and offset + _HEAD.size <= size:
            length, crc = _HEAD.unpack(os.pread(self.fd, _HEAD.size, offset))
            if offset + _HEAD.size + length > size:
                break
            data = os.pread(self.fd, length, offset + _HEAD.size)
            if zlib.crc32(data) != crc:
                break  # not whole yet (or torn by a crash: see Journal.drop_torn)
            out.append(data)
            offset += _HEAD.size + length
        return out, offset

    def remove(self) -> None:
        for fd in self.cursor_fds.values():
            os.close(fd)
        for sink in self.cursor_fds:
            Path(f"{self.path}.{sink}").unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


class Journal:
    """This process's segment plus any adopted ones, read per sink."""

    def __init__(
        self, directory: str | Path, sinks: Sequence[str], segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self.own = self._new_segment()
        self.adopted: dict[Path, Segment] = {}
        self._next_look = 0.0

    def _new_segment(self) -> Segment:
        path = self.directory / f"{os.getpid()}-{secrets.token_hex(6)}.seg"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return Segment(path, fd)

    def append(self, record: bytes) -> None:
        data = _HEAD.pack(len(record), zlib.crc32(record)) + record
        with self._lock:
            os.write(self.own.fd, data)

    def sync(self) -> None:
        """Put what was appended so far on the disk (one ``fdatasync`` for a whole group of events,
        from the delivery thread: a power failure loses at most the events since the last one)."""
        os.fdatasync(self.own.fd)

    def segments(self, *, look: bool = False) -> list[Segment]:
        """Adopted segments (oldest first), then this process's own; ``look``: first adopt any
        segment whose process is gone (a directory scan, done now and then, not per event)."""
        if look or self._next_look <= time.monotonic():
            self._adopt()
            self._next_look = time.monotonic() + LOOK_EVERY_S
        return [*self.adopted.values(), self.own]

    def _adopt(self) -> None:
        for path in sorted(self.directory.glob("*.seg"), key=_mtime):
            if path == self.own.path or path in self.adopted:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its process is alive and drains it
                continue
            if not path.exists():  # removed by the one that drained it before us
                os.close(fd)
                continue
            self.adopted[path] = Segment(path, fd)

    def settle(self, segment: Segment) -> None:
        """Remove an adopted segment every sink has read, rotate our own past its size."""
        size = segment.size()
        if any(segment.cursor(s) < size for s in self.sinks):
            if segment is not self.own:
                self.drop_torn(segment)
            return
        if segment is not self.own:
            self.adopted.pop(segment.path, None)
            segment.remove()
        elif size >= self.segment_bytes:
            with self._lock:
                old, self.own = self.own, self._new_segment()
            old.remove()

    def drop_torn(self, segment: Segment) -> None:
        """An adopted segment whose owner died mid-write ends in a torn record: skip it."""
        size = segment.size()
        for sink in self.sinks:
            records, end = segment.read(sink, 1)
            if not records and end < size:
                segment.advance(sink, size)

    def backlog(self) -> int:
        """Bytes some sink has not yet taken (0: every sink is up to date)."""
        total = 0
        for seg in [*self.adopted.values(), self.own]:
            size = seg.size()
            total += max(size - seg.cursor(s) for s in self.sinks) if self.sinks else 0
        return total

    def close(self) -> None:
        for seg in [*self.adopted.values(), self.own]:
            for fd in seg.cursor_fds.values():
                os.close(fd)
            os.close(seg.fd)
        self.adopted.clear()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
