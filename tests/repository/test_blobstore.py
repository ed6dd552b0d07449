"""The content-addressed blob store: atomic installs, shared blobs, streaming, cleanup."""

from __future__ import annotations

import hashlib
from pathlib import Path

from xds.repository.blobstore import BlobStore


def test_put_and_read_back(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"lab result" * 1000
    sha1, size = store.put_bytes(data)
    assert sha1 == hashlib.sha1(data).hexdigest() and size == len(data)
    with store.open(sha1) as fh:
        assert fh.read() == data
    assert list(store.all_blobs()) == [sha1]
    assert list(store.tmp.iterdir()) == []


def test_identical_documents_share_one_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    a = store.put_chunks([b"abc", b"def"])
    b = store.put_bytes(b"abcdef")
    assert a == b and len(list(store.all_blobs())) == 1


def test_spooled_file_is_renamed_into_place(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    fh, name = store.temp_file()
    with fh:
        fh.write(b"x" * 5000)
    digest = hashlib.sha1(b"x" * 5000).hexdigest()
    assert store.put_spooled(name, digest)
    assert store.exists(digest) and not Path(name).exists()
    other = tmp_path / "elsewhere"
    other.write_bytes(b"y")
    assert not store.put_spooled(str(other), hashlib.sha1(b"y").hexdigest())


def test_put_file_copy_and_move(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    source = tmp_path / "doc.pdf"
    source.write_bytes(b"%PDF" * 10000)
    sha1, size = store.put_file(source)
    assert source.exists() and store.exists(sha1) and size == 40000
    sha1b, _ = store.put_file(source, move=True)
    assert sha1b == sha1 and not source.exists()


def test_interrupted_writes_are_cleared(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    fh, _ = store.temp_file()
    fh.write(b"half a document")
    fh.close()
    assert store.clear_tmp() == 1
    assert list(store.tmp.iterdir()) == []


def test_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    def chunks():  # type: ignore[no-untyped-def]
        yield b"part one"
        raise ConnectionError("client went away")

    try:
        store.put_chunks(chunks())
    except ConnectionError:
        pass
    assert list(store.tmp.iterdir()) == [] and list(store.all_blobs()) == []


def test_new_fan_out_directories_are_made_durable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A blob's directory entry is synced, and so is the entry of each fan-out directory it needed."""
    from xds.repository import blobstore

    synced: list[Path] = []
    real = blobstore._fsync_dir
    monkeypatch.setattr(blobstore, "_fsync_dir", lambda path: (synced.append(Path(path)), real(path)))
    store = BlobStore(tmp_path)
    first, _ = store.put_bytes(b"first")
    ab, cd = store.blobs / first[:2], store.blobs / first[:2] / first[2:4]
    assert synced == [store.blobs, ab, cd]  # blobs/ab made, blobs/ab/cd made, the blob renamed in
    synced.clear()
    # another blob in a directory known to exist: only its own entry
    same_dir = next(
        data for i in range(100000) if hashlib.sha1(data := f"doc {i}".encode()).hexdigest()[:4] == first[:4]
    )
    store.put_bytes(same_dir)
    assert synced == [cd]
    # a directory removed behind the store's back is made again
    for blob in store.all_blobs():
        store.delete(blob)
    cd.rmdir()
    again, _ = store.put_bytes(b"first")
    assert again == first and store.exists(first)


def test_the_spool_of_a_process_that_is_gone_is_found_and_removed(tmp_path: Path) -> None:
    import fcntl
    import os

    store = BlobStore(tmp_path)
    mine = store.tmp
    assert BlobStore(tmp_path).tmp == mine  # another store on the root, in this process: the same
    gone = store.tmp_root / "w999999999"
    gone.mkdir()
    (gone / "xds-mtom-part").write_bytes(b"half a part")
    alive = store.tmp_root / "w999999998"
    alive.mkdir()
    fd = os.open(store.tmp_root / "w999999998.owner", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: held as another process would
    try:
        assert store.orphaned_spools() == [gone]
        assert store.remove_spool(gone) == 1
        assert not gone.exists() and alive.exists() and mine.exists()
    finally:
        os.close(fd)
    assert store.orphaned_spools() == [alive]
