"""Content-addressed blob store for document bytes (the repository's half of ITI TF-2 §3.41.4.1.3).

A blob is named by the SHA-1 of its bytes (the XDS hash), under ``<root>/blobs/ab/cd/<sha1>``.
Bytes are written to a temporary file in ``<root>/tmp``, flushed and fsynced, then renamed into
place and the directory fsynced, so a blob either exists whole or not at all, whatever moment the
process dies. Identical documents share one blob. Memory use does not depend on document size.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


class BlobStore:
    """Blobs under ``<root>/blobs``; temporary files under ``<root>/tmp/w<pid>``, one directory
    per process that writes, owned through an ``flock`` on ``<root>/tmp/w<pid>.owner`` held for
    the process's life: a directory whose lock can be taken belongs to a process that is gone
    (a worker killed alone), and :meth:`orphaned_spools` finds it for the next one to settle."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.tmp_root = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()  # fan-out directories known to exist, durably
        self._tmp: Path | None = None
        self._pid = 0

    @property
    def tmp(self) -> Path:
        """This process's directory for temporary files (made, and owned, on first use)."""
        if self._tmp is None or self._pid != os.getpid():
            self._tmp, self._pid = _claim(self.tmp_root), os.getpid()
        return self._tmp

    def orphaned_spools(self) -> list[Path]:
        """Temporary directories of processes that are gone (their owner lock is free)."""
        mine = self.tmp.name
        out = []
        for path in sorted(self.tmp_root.glob("w*")):
            if not path.is_dir() or path.name == mine:
                continue
            lock = path.with_name(path.name + ".owner")
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            finally:
                os.close(fd)
            out.append(path)
        return out

    def remove_spool(self, directory: Path) -> int:
        """Remove a gone process's temporary directory; how many files it held."""
        count = sum(1 for p in directory.iterdir() if p.is_file())
        shutil.rmtree(directory, ignore_errors=True)
        directory.with_name(directory.name + ".owner").unlink(missing_ok=True)
        return count

    def spooled_files(self) -> list[Path]:
        """Every temporary file of every process (owner locks aside)."""
        return [p for p in self.tmp_root.rglob("*") if p.is_file() and p.suffix != ".owner"]

    def path(self, sha1: str) -> Path:
        return self.blobs / sha1[:2] / sha1[2:4] / sha1

    def exists(self, sha1: str) -> bool:
        return self.path(sha1).is_file()

    def temp_file(self) -> tuple[BinaryIO, str]:
        """A new temporary file inside the store (same file system as the blobs, so rename is atomic)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="in-")
        return os.fdopen(fd, "w+b"), name

    def put_file(self, source: str | Path, *, move: bool = False) -> tuple[str, int]:
        """Store the bytes of ``source``; (sha1, size). ``move`` renames a file already in ``tmp``."""
        sha1 = hashlib.sha1()
        size = 0
        with open(source, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sha1.update(chunk)
                size += len(chunk)
        digest = sha1.hexdigest()
        if self.exists(digest):
            if move:
                os.unlink(source)
            return digest, size
        if move and Path(source).parent.resolve() == self.tmp.resolve():
            with open(source, "rb+") as fh:
                os.fsync(fh.fileno())
            self._install(str(source), digest)
        else:
            out, name = self.temp_file()
            with out, open(source, "rb") as fh:
                shutil.copyfileobj(fh, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            self._install(name, digest)
            if move:
                os.unlink(source)
        return digest, size

    def put_spooled(self, path: str, sha1: str) -> bool:
        """Install a file already written in ``tmp`` whose SHA-1 is known; False if not in ``tmp``."""
        if Path(path).parent.resolve() != self.tmp.resolve():
            return False
        if self.exists(sha1):
            os.unlink(path)
            return True
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
        self._install(path, sha1)
        return True

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store bytes given as chunks; (sha1, size)."""
        sha1 = hashlib.sha1()
        size = 0
        out, name = self.temp_file()
        try:
            with out:
                for chunk in chunks:
                    sha1.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(name)
            raise
        digest = sha1.hexdigest()
        if self.exists(digest):
            os.unlink(name)
        else:
            self._install(name, digest)
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_chunks([data])

    def _install(self, temp_name: str, digest: str) -> None:
        target = self.path(digest)
        self._make_dirs(target.parent)
        try:
            os.replace(temp_name, target)
        except FileNotFoundError:  # the directory was removed behind our back: make it again
            self._known_dirs.discard(target.parent)
            self._make_dirs(target.parent)
            os.replace(temp_name, target)
        _fsync_dir(target.parent)

    def _make_dirs(self, directory: Path) -> None:
        """``directory`` (``blobs/ab/cd``) and its parent, each made durable where it is new: a blob
        renamed into a directory whose own entry was never synced could vanish with it in a crash."""
        if directory in self._known_dirs:
            return
        for level in (directory.parent, directory):
            try:
                level.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(level.parent)
        self._known_dirs.add(directory)

    def open(self, sha1: str) -> BinaryIO:
        return open(self.path(sha1), "rb")

    def delete(self, sha1: str) -> None:
        try:
            os.unlink(self.path(sha1))
        except FileNotFoundError:
            pass

    def all_blobs(self) -> Iterable[str]:
        for path in self.blobs.glob("*/*/*"):
            if path.is_file():
                yield path.name

    def clear_tmp(self) -> int:
        """Remove temporary files left by interrupted writes — this process's and those of
        processes that are gone (and any from before per-process directories); how many."""
        removed = 0
        for path in [*self.tmp_root.iterdir(), *self.tmp.iterdir()]:
            if path.is_file() and path.suffix != ".owner":
                path.unlink(missing_ok=True)
                removed += 1
        for directory in self.orphaned_spools():
            removed += self.remove_spool(directory)
        return removed


# the temporary directory each store root has in this process, and the lock that owns it
_claims: dict[tuple[int, Path], tuple[Path, int]] = {}
_claims_lock = threading.Lock()


def _claim(tmp_root: Path) -> Path:
    """``<tmp_root>/w<pid>``, owned by this process through an flock held while it lives (one
    per process and root, whatever number of stores share the root)."""
    pid = os.getpid()
    key = (pid, tmp_root.resolve())
    with _claims_lock:
        claimed = _claims.get(key)
        if claimed is not None:
            return claimed[0]
        owner = os.open(tmp_root / f"w{pid}.owner", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(owner, fcntl.LOCK_EX)
        tmp = tmp_root / f"w{pid}"
        if tmp.is_dir() and any(tmp.iterdir()):  # a process gone with this pid left it
            tmp.rename(tmp_root / f"w{pid}-{uuid.uuid4().hex[:8]}")  # for recovery to find
        tmp.mkdir(exist_ok=True)
        _claims[key] = (tmp, owner)
        return tmp


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
