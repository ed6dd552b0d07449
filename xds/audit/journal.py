"""The audit spool: every event is appended to a file before any sink sees it.

Each process appends to its own segment files (``<pid>-<random>-<sequence>.seg``) under the spool
directory and holds a shared ``flock`` on the one it writes while it lives. A record is written
with one ``write`` call (length, CRC-32, bytes), so once :meth:`Journal.append` returns the event
survives the process being killed (``kill -9``): the kernel holds it. A segment past its size is
left for a new one.

The side that delivers — the same process, or a delivery process working for it (``owner``) —
holds a shared lock on the owner's segments too, so nobody else takes them while either lives.
Each sink has its own cursor per segment (``<segment>.<sink>``), moved only after the sink took the
records, so a sink that is down simply falls behind and catches up when it returns. A segment no
one holds (its writer and its deliverer are gone: an exclusive lock can be taken) is adopted by the
next deliverer that looks and drained like its own; a segment every sink has read to the end is
removed, once its writer has moved on to a newer one.
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
UNBORN_AFTER_S = 60.0  # a *.new file this old, unlocked, was left by a writer that died naming it
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

    def read(self, sink: str, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        """Up to ``limit`` whole records after the sink's cursor (each with its offset in the
        segment), and the offset after them."""
        offset = self.cursor(sink)
        size = self.size()
        out: list[tuple[int, bytes]] = []
        while len(out) < limit and offset + _HEAD.size <= size:
            length, crc = _HEAD.unpack(os.pread(self.fd, _HEAD.size, offset))
            if offset + _HEAD.size + length > size:
                break
            data = os.pread(self.fd, length, offset + _HEAD.size)
            if zlib.crc32(data) != crc:
                break  # not whole yet (or torn by a crash: see Journal.drop_torn)
            out.append((offset, data))
            offset += _HEAD.size + length
        return out, offset

    def remove(self) -> None:
        for sink in self.cursor_fds:
            Path(f"{self.path}.{sink}").unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        for fd in self.cursor_fds.values():
            os.close(fd)
        self.cursor_fds.clear()
        os.close(self.fd)


class Journal:
    """The segments one deliverer drains: its owner's (oldest first) and any adopted ones.

    ``write``: this process appends (its own segments, owner = this process); ``owner``: instead,
    the ``<pid>-<random>`` name of the process whose segments are delivered here (a delivery
    process working for it)."""

    def __init__(
        self,
        directory: str | Path,
        sinks: Sequence[str],
        segment_bytes: int = SEGMENT_BYTES,
        *,
        owner: str = "",
        write: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self.name = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.owner = owner or self.name
        self._sequence = 0
        self._fd = -1
        self._written = 0
        self.path: Path | None = None  # the segment this process appends to
        if write:
            self._open_next()
        self.own: dict[Path, Segment] = {}
        self.adopted: dict[Path, Segment] = {}
        self._next_look = 0.0

    # --- the writer's side ---------------------------------------------------------------------
    def _open_next(self) -> None:
        self._sequence += 1
        path = self.directory / f"{self.name}-{self._sequence:06d}.seg"
        fresh = path.with_suffix(".new")  # locked before it is a segment any deliverer looks at
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.rename(fresh, path)
        old, self._fd, self.path, self._written = self._fd, fd, path, 0
        if old >= 0:
            os.close(old)

    def append(self, record: bytes) -> None:
        data = _HEAD.pack(len(record), zlib.crc32(record)) + record
        with self._lock:
            os.write(self._fd, data)
            self._written += len(data)
            if self._written >= self.segment_bytes:
                self._open_next()

    # --- the deliverer's side ------------------------------------------------------------------
    def sync(self) -> None:
        """Put what the owner appended so far on the disk (one ``fdatasync`` per segment for a whole
        group of events, by the deliverer: a power failure loses at most the events since)."""
        for segment in self.own.values():
            os.fdatasync(segment.fd)

    def segments(self, *, look: bool = False) -> list[Segment]:
        """Adopted segments (oldest first), then the owner's; ``look``: first adopt any segment
        whose processes are gone (a directory scan with a lock attempt each, done now and then)."""
        self._take_own()
        if look or self._next_look <= time.monotonic():
            self._adopt()
            self._next_look = time.monotonic() + LOOK_EVERY_S
        return [*self.adopted.values(), *(self.own[p] for p in sorted(self.own))]

    def appended(self) -> int:
        """Bytes in the owner's segments (grows as the owner appends)."""
        self._take_own()
        return sum(segment.size() for segment in self.own.values())

    def _take_own(self) -> None:
        prefix = self.owner + "-"
        for name in os.listdir(self.directory):
            path = self.directory / name
            if name.startswith(prefix) and name.endswith(".seg") and path not in self.own:
                segment = _locked(path, fcntl.LOCK_SH)
                if segment is not None:  # (None: gone, or adopted by another deliverer)
                    self.own[path] = segment

    def _adopt(self) -> None:
        for path in sorted(self.directory.glob("*.seg"), key=_mtime):
            if path in self.own or path in self.adopted or path.name.startswith(self.owner + "-"):
                continue
            segment = _locked(path, fcntl.LOCK_EX)  # None: its writer or its deliverer lives
            if segment is not None:
                self.adopted[path] = segment
        for path in self.directory.glob("*.new"):
            _remove_unborn(path)

    def settle(self, segment: Segment) -> None:
        """Remove a segment every sink has read to its end, once no one appends to it: adopted, or
        one of the owner's that a newer one follows (seen before its size is read)."""
        newest = max(self.own) if self.own else None
        size = segment.size()
        if any(segment.cursor(s) < size for s in self.sinks):
            if segment.path in self.adopted:
                self.drop_torn(segment)
            return
        if segment.path in self.adopted:
            del self.adopted[segment.path]
        elif segment.path != newest:
            del self.own[segment.path]
        else:
            return
        segment.remove()

    def drop_torn(self, segment: Segment) -> None:
        """An adopted segment whose writer died mid-write ends in a torn record: skip it."""
        size = segment.size()
        for sink in self.sinks:
            records, end = segment.read(sink, 1)
            if not records and end < size:
                segment.advance(sink, size)

    def backlog(self) -> int:
        """Bytes some sink has not yet taken of the segments held here (0: up to date)."""
        total = 0
        for seg in [*self.adopted.values(), *self.own.values()]:
            size = seg.size()
            total += max(size - seg.cursor(s) for s in self.sinks) if self.sinks else 0
        return total

    def close(self) -> None:
        for seg in [*self.adopted.values(), *self.own.values()]:
            seg.close()
        self.adopted.clear()
        self.own.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def pending(directory: str | Path, sinks: Sequence[str]) -> int:
    """Bytes some sink has not yet taken of every segment in the spool directory, as the cursor
    files say now (for a process whose events another process delivers)."""
    total = 0
    for path in Path(directory).glob("*.seg"):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        for sink in sinks:
            try:
                text = Path(f"{path}.{sink}").read_bytes()[:32].strip(b"\0 \n")
            except FileNotFoundError:
                text = b""
            total += max(0, size - (int(text) if text.isdigit() else 0))
    return total


def _remove_unborn(path: Path) -> None:
    """A segment file its writer died between creating and naming (it holds nothing: records are
    appended only once it is named). Left alone while young — its writer may be between the two
    steps — or locked by a live writer."""
    try:
        if time.time() - path.stat().st_mtime < UNBORN_AFTER_S:
            return
    except FileNotFoundError:
        return
    segment = _locked(path, fcntl.LOCK_EX)
    if segment is not None:
        segment.remove()


def _locked(path: Path, mode: int) -> Segment | None:
    """The segment at ``path`` under a shared or exclusive lock; None when it is gone or the lock is
    held against us."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not path.exists():  # removed by the one that drained it before us
        os.close(fd)
        return None
    return Segment(path, fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
