"""The audit spool: every event is appended to a file before any sink sees it.

Each process appends to its own segment files (``<pid>-<random>-<sequence>.s3.seg``) under the
spool directory and holds a shared ``flock`` on the one it writes while it lives. A segment is
made at its full size (``posix_fallocate``: the disk space is taken then, not while appending)
and mapped into memory; a record (length, checksum, bytes) is copied into the mapping, its bytes
first and its length last, so a reader sees a record whole or not at all, and the data ends at
the first zero length. The checksum is Adler-32 (zlib's): a record's bytes are summed, with no
table to look up, in about half the time CRC-32 takes on a busy process's cold caches; like the
checksum of SQLite's write-ahead log, it tells a record whole from one torn or stale. The mapping
is the file's page cache, so once :meth:`Journal.append` returns the event survives the process
being killed (``kill -9``): the kernel holds it — without a system call per event. A record that
does not fit is put in a new segment.

The side that delivers — the same process, or a delivery process working for it (``owner``) —
holds a shared lock on the owner's segments too, so nobody else takes them while either lives.
Each sink has its own cursor per segment (``<segment>.<sink>``), moved only after the sink took the
records, so a sink that is down simply falls behind and catches up when it returns. A segment no
one holds (its writer and its deliverer are gone: an exclusive lock can be taken) is adopted by the
next deliverer that looks and drained like its own; a segment every sink has read to the end,
once its writer has moved on to a newer one, is removed — or kept (``*.free``, up to
:data:`POOL_SEGMENTS`) and made the next new segment of a writer: its blocks are allocated and
its pages in memory, which spares the writer a page fault, a zeroed page and an extent
conversion per page (the way PostgreSQL recycles WAL segments); when too few are kept as the
writer's segment fills, the deliverer writes new ones (:meth:`Journal.stock`). The old records
in one stay unread: the writer ends the data after each record it appends (a zero length), and
each record's checksum starts from its segment's name (:func:`_checksum`), so an old record
behind a mark lost in a power failure does not pass as new. Segments of earlier versions are read as they were
written: ``*.s2.seg`` with CRC-32 from the name, other ``*.seg`` with CRC-32 from 0.
"""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import secrets
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

_HEAD = struct.Struct(">II")  # length, checksum (8 bytes: Journal.append_pair counts on it)
_LENGTH = struct.Struct(">I")
_NO_LENGTH = bytes(_LENGTH.size)
_WALK_BYTES = 64 * 1024
_PREPARE_BYTES = 2 * 1024 * 1024
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if os.uname().sysname == "Linux" else 0)
SEGMENT_BYTES = 8 * 1024 * 1024
CURRENT = ".s3.seg"  # Adler-32 from the segment's name (_checksum): the form written now
SALTED = ".s2.seg"  # CRC-32 from the segment's name: an earlier version's form, read
POOL_SEGMENTS = 4  # drained segments kept for writers to write again (*.free)
BLANK = ".blank"  # a segment for the pool being written (Journal.stock)
UNBORN_AFTER_S = 60.0  # a *.new file this old, unlocked, was left by a writer that died naming it
LOOK_EVERY_S = 5.0  # how often the spool directory is searched for segments of dead processes


class Segment:
    """One segment file, opened for reading (and for appending when it is this process's own)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd  # holds the flock
        self.cursors: dict[str, int] = {}
        self.cursor_fds: dict[str, int] = {}
        self._end = 0
        self._synced: mmap.mmap | None = None  # (a mapping to put the data on the disk through: sync)
        self.checksum, self.seed = _checksum(path.name)

    def size(self) -> int:
        """The file's size (for a segment made whole-size, more than its data: see :meth:`end`)."""
        return os.fstat(self.fd).st_size

    def end(self) -> int:
        """Where the data written so far ends: at the first zero length, or a record that would
        run past the file (only ever grows, so it is walked on from where it last stood)."""
        self._end = _data_end(self.fd, self._end, self.size())
        return self._end

    def sync(self) -> None:
        """Put the data written so far on the disk: the pages up to where it ends, not the whole
        file (``msync`` of that range, which is ``fdatasync``'s work for those pages). The pages
        past it, which the writer made writable ahead (:meth:`Journal._prepare`), are left alone:
        written back, they would be write-protected again and fault again when the writer gets
        there. (Nothing is written through this mapping: it is writable because Python's
        ``mmap.flush`` does nothing on a read-only one.)"""
        end = self.end()
        if self._synced is None:
            self._synced = mmap.mmap(self.fd, self.size(), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        pages = -(-end // mmap.PAGESIZE) * mmap.PAGESIZE
        if pages:
            self._synced.flush(0, min(len(self._synced), pages))

    def cursor(self, sink: str) -> int:
        if sink not in self.cursors:
            fd = os.open(f"{self.path}.{sink}", os.O_RDWR | os.O_CREAT, 0o600)
            self.cursor_fds[sink] = fd
            self.cursors[sink] = _offset(os.pread(fd, 32, 0))
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
            length, check = _HEAD.unpack(os.pread(self.fd, _HEAD.size, offset))
            if length == 0 or offset + _HEAD.size + length > size:
                break  # the end of the data (or a length torn by a crash: see Journal.drop_torn)
            data = os.pread(self.fd, length, offset + _HEAD.size)
            if self.checksum(data, self.seed) != check:
                break  # not whole yet (or torn by a crash: see Journal.drop_torn)
            out.append((offset, data))
            offset += _HEAD.size + length
        return out, offset

    def remove(self) -> None:
        self._remove_cursors()
        self.path.unlink(missing_ok=True)
        self.close()

    def retire(self, target: Path) -> None:
        """Keep the drained segment for a writer to write again, as ``target`` (``*.free``)."""
        self._remove_cursors()
        os.rename(self.path, target)
        self.close()

    def _remove_cursors(self) -> None:
        for sink in self.cursor_fds:
            Path(f"{self.path}.{sink}").unlink(missing_ok=True)

    def close(self) -> None:
        for fd in self.cursor_fds.values():
            os.close(fd)
        self.cursor_fds.clear()
        if self._synced is not None:
            self._synced.close()
            self._synced = None
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
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None  # of the mapping: the checksum is taken of the record in it
        self._written = 0
        self._ready = 0  # the pages before this are made writable ahead of the copies (_prepare)
        self._seed = 1  # the checksums' start (_checksum of the segment's name)
        self._stale = False  # the segment was written before (a *.free one): end the data after each record
        self.path: Path | None = None  # the segment this process appends to
        if write:
            self._open_next()
            os.register_at_fork(after_in_child=functools.partial(_forked, weakref.ref(self)))
        self.own: dict[Path, Segment] = {}
        self.adopted: dict[Path, Segment] = {}
        self._next_look = 0.0

    # --- the writer's side ---------------------------------------------------------------------
    def _open_next(self, least: int = 0) -> None:
        self._sequence += 1
        path = self.directory / f"{self.name}-{self._sequence:06d}{CURRENT}"
        fresh = path.with_suffix(".new")  # locked before it is a segment any deliverer looks at
        capacity = max(self.segment_bytes, least)
        fd = _claim(self.directory, fresh, capacity)
        stale = fd >= 0
        try:
            if not stale:
                fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                os.posix_fallocate(fd, 0, capacity)  # all of it now: no disk full under the mapping
            mapped = mmap.mmap(fd, capacity, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            if stale:
                mapped[: _LENGTH.size] = _NO_LENGTH  # no record yet
            os.rename(fresh, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            fresh.unlink(missing_ok=True)
            raise
        self._release()
        self._fd, self._map, self.path, self._written, self._ready = fd, mapped, path, 0, 0
        self._view = memoryview(mapped)
        self._seed, self._stale = _checksum(path.name)[1], stale

    def append(self, record: bytes) -> None:
        """Put one record (not empty) in this process's segment."""
        self.append_pair(record, b"")

    def append_pair(
        self,
        head: bytes,
        body: bytes,
        _head: struct.Struct = _HEAD,
        _check: Callable[[memoryview, int], int] = zlib.adler32,
    ) -> None:
        """Put the record ``head + body`` (``head`` not empty) in this process's segment, copied
        as two pieces: the record is the same, without making it first (a query's envelope, ~1 kB,
        is copied once instead of twice), and its checksum is taken once, of the record where it
        now lies. (What it uses is bound to it and the lock is taken without a ``with``: every
        query comes here, on a busy process's cold caches, where each lookup costs.)"""
        if not head:
            raise ValueError("an empty journal record")
        length = len(head) + len(body)
        lock = self._lock
        lock.acquire()
        try:
            at = self._written
            end = at + 8 + length  # (_HEAD.size)
            if end > self._ready:  # (no segment yet, a full one, or pages not made writable yet)
                at = self._room(length)
                end = at + 8 + length
            mapped: mmap.mmap = self._map  # type: ignore[assignment]
            middle = at + 8 + len(head)
            mapped[at + 8 : middle] = head
            mapped[middle:end] = body
            if self._stale and end + 8 <= len(mapped):
                mapped[end : end + 4] = _NO_LENGTH  # where the data ends, until the next
            check = _check(self._view[at + 8 : end], self._seed)  # type: ignore[index]
            _head.pack_into(mapped, at, length, check)  # last: now it is there
            self._written = end
        finally:
            lock.release()

    def _room(self, length: int) -> int:
        """Where a record of ``length`` bytes goes: in this segment, with the pages ahead made
        writable, or at the start of a new one."""
        at = self._written
        if self._map is None or at + _HEAD.size + length > len(self._map):
            self._open_next(_HEAD.size + length)
            at = 0
        if at + _HEAD.size + length > self._ready:
            self._prepare(at + _HEAD.size + length)
        return at

    def _prepare(self, upto: int) -> None:
        """Make the pages ahead writable in one call (``MADV_POPULATE_WRITE``, Linux 5.14), 2 MB at
        a time: a page met first by a copy costs a page fault each, several times more than this,
        on a busy process's cold caches. On ext4 a call may also wait for the file system's journal
        (the file's modification time goes into it), milliseconds now and then, so the fewer calls
        the better: timed in a serving worker, 256 kB at a time spent 25-54 ms per 10,000 queries
        in them, 2 MB at a time 4-26 ms. (The deliverer puts only the written pages on the disk,
        so those made writable ahead stay so: :meth:`Segment.sync`.) Without it (older kernels,
        other systems) the copies fault them in."""
        mapped = self._map
        assert mapped is not None
        start, end = self._ready, min(len(mapped), upto + _PREPARE_BYTES)
        if end < len(mapped):
            end -= end % mmap.PAGESIZE
        self._ready = end
        if _POPULATE_WRITE and end > start:
            try:
                mapped.madvise(_POPULATE_WRITE, start, end - start)
            except (OSError, ValueError):
                self._ready = len(mapped)  # not here: leave it to the copies

    def _forked(self) -> None:
        """In a child made by ``fork``: the parent goes on writing its segment (the mapping is
        shared), so the child writes segments of its own, under its own name (they are delivered
        as a dead process's are: adopted once it leaves them)."""
        self._lock = threading.Lock()
        self._map = self._view = None  # (the child's copy of the mapping: unmapped when collected)
        self._written = self._ready = 0
        if self._fd >= 0:
            os.close(self._fd)  # the child's descriptor; the parent's holds the lock on
        self._fd = -1
        self.name = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._sequence = 0

    def _release(self) -> None:
        if self._view is not None:
            self._view.release()  # (a mapping with a view of it cannot be closed)
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- the deliverer's side ------------------------------------------------------------------
    def sync(self) -> None:
        """Put what the owner appended so far on the disk (one :meth:`Segment.sync` per segment for
        a whole group of events, by the deliverer: a power failure loses at most the events
        since)."""
        for segment in self.own.values():
            segment.sync()

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
        return sum(segment.end() for segment in self.own.values())

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
        for path in [*self.directory.glob("*.new"), *self.directory.glob("*" + BLANK)]:
            _remove_unborn(path)

    def stock(self) -> bool:
        """Make one segment for the pool (``*.free``) once the owner's newest segment is half full
        and fewer than :data:`POOL_SEGMENTS` wait there: of the same size, written whole (zeros)
        and put on the disk. So a writer that fills its segment while the deliverer is behind —
        under load, when nothing is drained to keep — still finds one ready: a segment made on the
        spot costs the writer ``posix_fallocate`` and, for each page, a fault that allocates,
        zeroes and converts a block (tens of milliseconds for 8 MB), where a written one costs
        mapping its pages. Done by the deliverer when it is up to date (its CPU, not a
        transaction's); True when it made one (False also when the disk is full)."""
        if not self.own:
            return False
        newest = self.own[max(self.own)]
        size = newest.size()
        if newest.end() < size // 2 or self._kept() >= POOL_SEGMENTS:
            return False
        blank = self.directory / f"{secrets.token_hex(8)}{BLANK}"  # not a kept one until whole
        try:
            fd = os.open(blank, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            zeros = bytes(min(size, 1024 * 1024))
            at = 0
            while at < size:
                at += os.pwrite(fd, zeros[: size - at], at)
            os.fdatasync(fd)
            os.rename(blank, blank.with_suffix(".free"))
            return True
        except OSError:
            blank.unlink(missing_ok=True)
            return False
        finally:
            os.close(fd)

    def settle(self, segment: Segment) -> None:
        """Remove a segment every sink has read to its end, once no one appends to it: adopted, or
        one of the owner's that a newer one follows (seen before its size is read)."""
        newest = max(self.own) if self.own else None
        size = segment.end()
        if segment.path in self.adopted and any(segment.cursor(s) < size for s in self.sinks):
            self.drop_torn(segment)
        if any(segment.cursor(s) < size for s in self.sinks):
            return
        if segment.path in self.adopted:
            del self.adopted[segment.path]
        elif segment.path != newest:
            del self.own[segment.path]
        else:
            return
        self._retire(segment)

    def _retire(self, segment: Segment) -> None:
        """Remove a drained segment — or, while fewer than :data:`POOL_SEGMENTS` wait there, keep it
        for a writer to write again (``*.free``): its disk blocks are taken and written and its
        pages are in memory, so appending to it takes no page allocation, zeroing or block
        conversion (a new segment's first write to each page costs all three). A writer takes one
        of its own size (:func:`_claim`)."""
        if segment.path.name.endswith(CURRENT) and self._kept() < POOL_SEGMENTS:
            try:
                segment.retire(self.directory / f"{secrets.token_hex(8)}.free")
                return
            except OSError:
                pass
        segment.remove()

    def _kept(self) -> int:
        """How many segments wait in the pool (``*.free``) for a writer."""
        return sum(1 for _ in self.directory.glob("*.free"))

    def drop_torn(self, segment: Segment) -> None:
        """An adopted segment whose writer died mid-write may end in a torn record: skip it (and
        anything after it, to the end of the file)."""
        data = segment.end()
        for sink in self.sinks:
            records, end = segment.read(sink, 1)
            if not records and end < data:
                segment.advance(sink, segment.size())

    def backlog(self) -> int:
        """Bytes some sink has not yet taken of the segments held here (0: up to date)."""
        total = 0
        for seg in [*self.adopted.values(), *self.own.values()]:
            size = seg.end()
            total += max(max(0, size - seg.cursor(s)) for s in self.sinks) if self.sinks else 0
        return total

    def close(self) -> None:
        for seg in [*self.adopted.values(), *self.own.values()]:
            seg.close()
        self.adopted.clear()
        self.own.clear()
        self._release()


def pending(directory: str | Path, sinks: Sequence[str]) -> int:
    """Bytes some sink has not yet taken of every segment in the spool directory, as the cursor
    files say now (for a process whose events another process delivers)."""
    total = 0
    for path in Path(directory).glob("*.seg"):
        cursors = []
        for sink in sinks:
            try:
                cursors.append(_offset(Path(f"{path}.{sink}").read_bytes()[:32]))
            except FileNotFoundError:
                cursors.append(0)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            start = min(cursors, default=0)
            end = _data_end(fd, start, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        total += sum(max(0, end - cursor) for cursor in cursors)
    return total


def _checksum(name: str) -> tuple[Callable[[bytes, int], int], int]:
    """How a segment's records are checked, and where their checksums start: Adler-32 from the
    segment's name (the form written now), so that the records a segment held before it was written
    again (its data ends after each new record, but a power failure may lose that mark) never pass
    as new; for segments of earlier versions, CRC-32 from their name (``*.s2.seg``) or from 0."""
    if name.endswith(CURRENT):
        return zlib.adler32, zlib.adler32(name.encode())
    return zlib.crc32, zlib.crc32(name.encode()) if name.endswith(SALTED) else 0


def _claim(directory: Path, fresh: Path, capacity: int) -> int:
    """A drained segment of ``capacity`` bytes kept for writing again, taken as ``fresh`` (locked,
    then renamed: one writer gets each) and opened; -1 when there is none. Kept ones of another
    size are removed."""
    for name in os.listdir(directory):
        if not name.endswith(".free"):
            continue
        kept = directory / name
        try:
            fd = os.open(kept, os.O_RDWR)
        except FileNotFoundError:  # taken by another writer
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if os.fstat(fd).st_size != capacity:
                kept.unlink()
            else:
                os.rename(kept, fresh)
                return fd
        except OSError:  # taken by another writer (or removed), or its lock held
            pass
        os.close(fd)
    return -1


def _offset(cursor_file: bytes) -> int:
    """The offset a cursor file holds (0 for one not written yet)."""
    text = cursor_file.strip(b"\0 \n")
    return int(text) if text.isdigit() else 0


def _data_end(fd: int, offset: int, size: int) -> int:
    """Walk the records from ``offset`` (a record's start) to where the data ends: a zero length,
    the end of the file, or a record that would run past it (heads read 64 kB at a time)."""
    while offset + _HEAD.size <= size:
        chunk = os.pread(fd, min(_WALK_BYTES, size - offset), offset)
        at = 0
        while at + _HEAD.size <= len(chunk):
            (length,) = _LENGTH.unpack_from(chunk, at)
            if length == 0 or offset + at + _HEAD.size + length > size:
                return offset + at
            at += _HEAD.size + length
        if at == 0:  # (the file was cut short under us)
            return offset
        offset += at
    return offset


def _forked(journal: weakref.ref[Journal]) -> None:
    live = journal()
    if live is not None:
        live._forked()


def _remove_unborn(path: Path) -> None:
    """A segment file its writer died between creating and naming (it holds nothing: records are
    appended only once it is named), or one for the pool its deliverer died writing (``*.blank``).
    Left alone while young — its maker may be between the two steps — or locked by a live one."""
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
