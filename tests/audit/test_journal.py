"""The audit spool's segments: records copied into a mapped, whole-size file, read back whole, in
order and once; a writer killed mid-stream or forked loses nothing it had appended."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xds.audit.journal import Journal, pending


def _drain(journal: Journal, sink: str = "database") -> list[bytes]:
    out: list[bytes] = []
    for segment in journal.segments(look=True):
        while True:
            records, end = segment.read(sink, 100)
            if not records:
                break
            out += [data for _, data in records]
            segment.advance(sink, end)
        journal.settle(segment)
    return out


def test_records_come_back_whole_and_in_order_across_segments(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    writer = Journal(spool, ["database"], segment_bytes=4096)
    reader = Journal(spool, ["database"], owner=writer.name, write=False)
    sent = [f"event {i} ".encode() * (1 + i % 40) for i in range(300)]
    sent.append(b"x" * 10_000)  # larger than a segment: a segment of its own
    for record in sent:
        writer.append(record)
    files = sorted(spool.glob("*.seg"))
    assert len(files) > 10
    assert all(f.stat().st_size >= 4096 for f in files)  # made whole-size up front
    assert pending(spool, ["database"]) == sum(8 + len(r) for r in sent)  # the data, not the files
    assert reader.appended() == sum(8 + len(r) for r in sent)
    assert _drain(reader) == sent
    assert pending(spool, ["database"]) == 0 and reader.backlog() == 0
    # every segment but the one still written to is gone once read
    assert [p.name for p in spool.glob("*.seg")] == [writer.path.name]  # type: ignore[union-attr]
    writer.append(b"later")
    assert _drain(reader) == [b"later"]
    writer.close()
    reader.close()


def test_a_record_appended_in_two_pieces_is_the_record_of_both(tmp_path: Path) -> None:
    """append_pair(head, body) writes the record append(head + body) writes: read back whole (its
    CRC checked by the reader), across segments and reused ones, as the joined ones are."""
    pairs = [(f"head {i},".encode(), b"<body/>" * (i % 50)) for i in range(400)]
    for way in ("joined", "pair"):
        spool = tmp_path / way
        writer = Journal(spool, ["database"], segment_bytes=4096)
        reader = Journal(spool, ["database"], owner=writer.name, write=False)
        got = []
        for i, (head, body) in enumerate(pairs):
            if way == "pair":
                writer.append_pair(head, body)
            else:
                writer.append(head + body)
            if i % 100 == 99:  # drained: its segments are kept and written again
                got += _drain(reader)
        got += _drain(reader)
        assert got == [head + body for head, body in pairs]
        writer.close()
        reader.close()
    with pytest.raises(ValueError):
        Journal(tmp_path / "empty", ["database"]).append_pair(b"", b"body")


def test_an_empty_record_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path, ["database"])
    try:
        with pytest.raises(ValueError):
            journal.append(b"")
    finally:
        journal.close()


def test_a_torn_record_of_a_dead_writer_is_skipped(tmp_path: Path) -> None:
    """A record whose bytes do not match its CRC (a writer killed while writing its head) ends what
    is read of an adopted segment; the records before it are delivered, the segment removed."""
    spool = tmp_path / "spool"
    writer = Journal(spool, ["database"])
    writer.append(b"first")
    writer.append(b"second")
    path = writer.path
    assert path is not None
    at = 8 + len(b"first") + 8 + len(b"second")
    writer.close()  # its writer is gone: the segment is anyone's to adopt
    with open(path, "r+b") as f:  # a head written, its bytes not
        f.seek(at)
        f.write(struct.pack(">II", 5, 12345) + b"\0\0\0\0\0")
    reader = Journal(spool, ["database"], owner="someone-else", write=False)
    assert _drain(reader) == [b"first", b"second"]
    assert not path.exists()
    reader.close()


_WRITER = """
import sys
from xds.audit.journal import Journal
journal = Journal(sys.argv[1], ["database"], segment_bytes=64 * 1024)
print(journal.name, flush=True)
i = 0
while True:
    journal.append(b"record %08d " % i + b"." * (i % 300))
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_mid_stream_loses_nothing_it_appended(tmp_path: Path) -> None:
    """A process appending as fast as it can is killed with SIGKILL: every record it said it had
    appended is there, whole and in order, and nothing else (no torn record) is delivered."""
    spool = tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(spool)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    said = -1
    deadline = time.monotonic() + 30
    while said < 20_000 and time.monotonic() < deadline:
        said = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    reader = Journal(spool, ["database"], owner="deliverer", write=False)
    got = _drain(reader)
    assert len(got) > said  # the records it said it appended, perhaps one more it had not said yet
    assert got == [b"record %08d " % i + b"." * (i % 300) for i in range(len(got))]
    assert not list(spool.glob("*.seg"))  # adopted, drained and removed
    reader.close()


def test_a_forked_child_writes_segments_of_its_own(tmp_path: Path) -> None:
    """After ``fork`` the parent and the child both append; neither writes over the other."""
    spool = tmp_path / "spool"
    journal = Journal(spool, ["database"])
    journal.append(b"before")
    pid = os.fork()
    if pid == 0:  # the child
        try:
            for i in range(100):
                journal.append(b"child %d" % i)
            journal.close()
        finally:
            os._exit(0)
    for i in range(100):
        journal.append(b"parent %d" % i)
    os.waitpid(pid, 0)
    mine = Journal(spool, ["database"], owner=journal.name, write=False)
    got = _drain(mine)  # its own and (adopted: the child is gone) the child's
    assert [r for r in got if not r.startswith(b"child")] == [b"before"] + [
        b"parent %d" % i for i in range(100)
    ]
    assert [r for r in got if r.startswith(b"child")] == [b"child %d" % i for i in range(100)]
    mine.close()
    journal.close()


def test_a_spool_that_cannot_take_a_segment_never_fails_the_transaction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When a new segment cannot be made (here: its directory is gone; a full disk fails the same
    way, at posix_fallocate) the event is logged as lost, the caller goes on, and the spool takes
    events again once it can."""
    import shutil

    from xds.audit.trail import AuditTrail

    spool = tmp_path / "spool"
    trail = AuditTrail(spool, [])
    trail.journal.close()
    trail.journal = Journal(spool, [], segment_bytes=64)  # one 40-byte event per segment
    trail.append(b"a" * 40)
    shutil.rmtree(spool)
    trail.append(b"b" * 40)  # needs a new segment: none can be made
    assert "could not be written" in caplog.text
    spool.mkdir()
    trail.append(b"c" * 40)
    reader = Journal(spool, ["database"], owner=trail.journal.name, write=False)
    assert _drain(reader) == [b"c" * 40]  # ("a" went with the directory)
    reader.close()
    trail.journal.close()


def test_drained_segments_are_written_again_and_nothing_stale_is_read(tmp_path: Path) -> None:
    """A drained segment is kept (``*.free``, at most POOL_SEGMENTS) and the next segment a writer
    needs is made from it: records of the same sizes as before line up with the old ones, and
    only the new ones are read."""
    from xds.audit.journal import POOL_SEGMENTS

    spool = tmp_path / "spool"
    writer = Journal(spool, ["database"], segment_bytes=4096)
    reader = Journal(spool, ["database"], owner=writer.name, write=False)
    files: set[int] = set()
    segments = set()
    for round_ in range(60):
        sent = [f"{round_:03d} {i:04d}".encode() * 10 for i in range(20 + round_ % 7)]  # 80 bytes each
        for record in sent:
            writer.append(record)
            files.add(os.fstat(writer._fd).st_ino)
            segments.add(writer.path)
        assert _drain(reader) == sent
        assert len(list(spool.glob("*.free"))) <= POOL_SEGMENTS
    assert len(segments) > 25  # a new segment every other round ...
    assert len(files) <= POOL_SEGMENTS + 2  # ... made from the same few files
    assert pending(spool, ["database"]) == 0 and reader.backlog() == 0
    writer.close()
    reader.close()


def test_the_deliverer_stocks_the_pool_with_written_segments_for_a_writer_about_to_need_one(
    tmp_path: Path,
) -> None:
    """Once the writer's segment is half full, the deliverer (up to date) makes segments of its size
    for the pool, written whole, up to POOL_SEGMENTS; the writer's next segment is one of them, and
    what it appends there reads back alone. A pool segment its maker died writing (``*.blank``)
    is removed once old and unlocked."""
    from xds.audit import journal as j

    spool = tmp_path / "spool"
    writer = Journal(spool, ["database"], segment_bytes=8192)
    reader = Journal(spool, ["database"], owner=writer.name, write=False)
    writer.append(b"a" * 3000)
    assert _drain(reader) == [b"a" * 3000]
    assert not reader.stock()  # 3008 of 8192 bytes: not yet
    writer.append(b"b" * 2000)
    assert _drain(reader) == [b"b" * 2000]
    made = 0
    while reader.stock():
        made += 1
    kept = sorted(spool.glob("*.free"))
    assert made == j.POOL_SEGMENTS == len(kept)
    assert all(path.read_bytes() == bytes(8192) for path in kept)  # whole, and on the disk
    inodes = {path.stat().st_ino for path in kept}
    writer.append(b"c" * 4000)  # does not fit: the next segment is taken from the pool
    assert os.fstat(writer._fd).st_ino in inodes and len(list(spool.glob("*.free"))) == j.POOL_SEGMENTS - 1
    assert _drain(reader) == [b"c" * 4000]
    old, held = spool / f"0001{j.BLANK}", spool / f"0002{j.BLANK}"
    for path in (old, held):
        path.write_bytes(bytes(100))
        os.utime(path, (time.time() - j.UNBORN_AFTER_S - 1,) * 2)
    with open(held, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # its maker lives
        reader.segments(look=True)
        assert not old.exists() and held.exists()
    writer.close()
    reader.close()


def test_a_record_from_before_a_segment_was_written_again_never_passes_as_new(tmp_path: Path) -> None:
    """Were the mark after the newest record lost (a power failure writing back one page and not
    the next), the old record behind it would be whole again: its CRC started from the old
    segment's name, so it is not read as new."""
    spool = tmp_path / "spool"
    writer = Journal(spool, ["database"], segment_bytes=4096)
    reader = Journal(spool, ["database"], owner=writer.name, write=False)
    for _ in range(30):
        writer.append(b"o" * 100)  # at 0, 108, 216, ...
    first = os.fstat(writer._fd).st_ino
    writer.append(b"b" * 1000)  # does not fit: a new segment
    assert _drain(reader) == [b"o" * 100] * 30 + [b"b" * 1000]
    (kept,) = spool.glob("*.free")  # the first, drained: kept
    before = kept.read_bytes()
    writer.append(b"p" * 2980)
    writer.append(b"n" * 100)  # does not fit: a new segment, made from the kept one
    assert os.fstat(writer._fd).st_ino == first and not list(spool.glob("*.free"))
    assert writer.path is not None
    with open(writer.path, "r+b") as fh:
        fh.seek(108)
        assert fh.read(4) == bytes(4)  # the mark after the newest record
        fh.seek(108)
        fh.write(before[108:112])  # lost: the old record at 108 is whole again
    assert _drain(reader) == [b"p" * 2980, b"n" * 100]
    writer.close()
    reader.close()


def test_the_deliverer_s_sync_covers_the_data_written_whatever_its_end(tmp_path: Path) -> None:
    """The deliverer puts a segment's data on the disk as a range of pages (the data's, not the
    pages the writer made writable ahead): nothing yet, part of a page, several pages, and a
    segment made larger than the others for one large record; the records read back unchanged."""
    spool = tmp_path / "spool"
    writer = Journal(spool, ["database"], segment_bytes=64 * 1024)
    reader = Journal(spool, ["database"], owner=writer.name, write=False)
    reader.segments(look=True)
    reader.sync()  # nothing written yet
    sent: list[bytes] = []
    for size in (10, 3000, 20_000, 200_000, 5):  # part of a page, ..., one larger than a segment
        record = os.urandom(size)
        writer.append(record)
        sent.append(record)
        reader.segments()
        reader.sync()
    assert _drain(reader) == sent
    writer.close()
    reader.close()


def test_segments_an_earlier_version_wrote_are_read_as_written(tmp_path: Path) -> None:
    """Segments are now checked with Adler-32 from their name (``*.s3.seg``); those an earlier
    version left in the spool — CRC-32 from the name (``*.s2.seg``) or from 0 (``*.seg``) — are
    adopted and read as they were written, and a record whose check does not hold is not read."""
    import zlib

    spool = tmp_path / "spool"
    spool.mkdir()
    forms = {
        "111-aaaaaaaaaaaa-000001.s2.seg": lambda n: zlib.crc32(n.encode()),
        "112-bbbbbbbbbbbb-000001.seg": lambda n: 0,
    }
    expected = []
    for name, seed in forms.items():
        records = [f"{name} {i}".encode() * (i + 1) for i in range(5)]
        data = b"".join(struct.pack(">II", len(r), zlib.crc32(r, seed(name))) + r for r in records)
        torn = b"not whole"
        data += struct.pack(
            ">II", len(torn), zlib.adler32(torn, zlib.adler32(name.encode()))
        )  # another form's check
        (spool / name).write_bytes(data + torn + bytes(4096))
        expected += records
        os.utime(spool / name, (time.time() - 10 + len(expected), time.time() - 10 + len(expected)))
    writer = Journal(spool, ["database"])
    assert writer.path is not None and writer.path.name.endswith(".s3.seg")
    writer.append(b"now")
    reader = Journal(spool, ["database"], owner=writer.name, write=False)
    assert _drain(reader) == [*expected, b"now"]
    writer.close()
    reader.close()
