"""A repository killed with SIGKILL amid concurrent ITI-41 requests recovers on restart.

Afterwards every document the registry knows is retrievable with its registered hash, and the
repository keeps no bytes that no registry entry points to (ITI TF-2 §3.41.4.1.3: registration
failure leaves nothing stored).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select
from support import free_port

from xds import samples
from xds.client import RepositoryClient, describe_files
from xds.database import open_engine
from xds.registry import schema as t
from xds.repository.blobstore import BlobStore
from xds.repository.schema import repository_documents as rd
from xds.repository.service import persistent_unique_id


def start_server(data_dir: Path, database_url: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "xds.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--database-url", database_url]
    # stderr is read only if the server fails to start: no request log to fill the pipe meanwhile
    env = {**os.environ, "XDS_SERVER_REQUEST_LOG": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server exited") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def test_sigkill_during_concurrent_provides(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    proc = start_server(data_dir, database_url, port)
    url = f"http://127.0.0.1:{port}/repository"
    stop = threading.Event()
    accepted: list[str] = []
    files_dir = tmp_path / "files"
    files_dir.mkdir()

    def source(n: int) -> None:
        i = 0
        with RepositoryClient(url, timeout=30) as client:
            while not stop.is_set():
                f = files_dir / f"s{n}-{i}.pdf"
                f.write_bytes(os.urandom(64 * 1024 + i))
                i += 1
                sub, docs = describe_files([f], samples.patient_cx("13116900216"))
                try:
                    if client.provide_and_register(sub, docs).ok:
                        accepted.append(sub.documents[0].unique_id or "")
                except Exception:
                    return  # the server died under us

    threads = [threading.Thread(target=source, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30
    while len(accepted) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for th in threads:
        th.join(timeout=30)
    assert accepted, "no submission was accepted before the kill"

    proc = start_server(data_dir, database_url, port)  # recovery runs before serving
    try:
        store_dir = data_dir / "repositories" / "default"
        repo_id = persistent_unique_id(store_dir)
        engine = open_engine(database_url)
        with engine.connect() as conn:
            registered = {
                r.unique_id: r.hash
                for r in conn.execute(
                    select(t.documents.c.unique_id, t.documents.c.hash).where(
                        t.documents.c.repository_unique_id == repo_id
                    )
                )
            }
            rows = conn.execute(select(rd.c.unique_id, rd.c.sha1, rd.c.state)).all()
        engine.dispose()
        assert set(accepted) <= registered.keys()
        assert {r.state for r in rows} <= {"stored"}
        assert {r.unique_id for r in rows} == registered.keys()
        store = BlobStore(store_dir)
        assert set(store.all_blobs()) == {r.sha1 for r in rows}
        assert store.spooled_files() == []
        with RepositoryClient(url) as client:
            outcome, found = client.retrieve(repo_id, sorted(registered), tmp_path / "out")
        assert outcome.ok, outcome.errors
        assert len(found) == len(registered)
        for doc in found:
            assert hashlib.sha1(doc.path.read_bytes()).hexdigest() == registered[doc.unique_id]
        print(
            f"SIGKILL under 6 sources: {len(accepted)} acknowledged, {len(registered)} registered and"
            f" retrievable byte-identical, {len(rows)} rows, {len(list(store.all_blobs()))}"
            " blobs, no spool left"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("registered", [True, False])
def test_recover_settles_pending_rows(tmp_path: Path, engine, registered: bool) -> None:  # type: ignore[no-untyped-def]
    from xds.repository.service import RepositoryService

    async def never(_sub):  # type: ignore[no-untyped-def]
        raise AssertionError("recovery does not register")

    repo = RepositoryService("r", "1.2.3.4", tmp_path, engine, never, lambda uid, rid: registered)
    sha1, size = repo.store.put_bytes(b"pending document")
    orphan, _ = repo.store.put_bytes(b"bytes nobody points to")
    fh, _ = repo.store.temp_file()
    fh.close()
    with engine.begin() as conn:
        conn.execute(
            rd.insert().values(
                repository_id="1.2.3.4",
                unique_id="1.2.3.4.5",
                sha1=sha1,
                size=size,
                mime_type="text/plain",
                state="pending",
                created="20261122000000",
            )
        )
    counts = repo.recover()
    assert counts["orphans"] == (1 if registered else 2) and counts["tmp"] == 1
    with engine.connect() as conn:
        states = conn.execute(select(rd.c.state)).scalars().all()
    assert states == (["stored"] if registered else [])
    assert repo.store.exists(sha1) is registered and not repo.store.exists(orphan)


def test_recording_a_resubmission_again_after_a_rollback_finds_it_the_same(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    """The repository's rows are written inside the registration's transaction, which GroupCommit
    may roll back (a deadlock on PostgreSQL) and run again: a document whose bytes were stored
    before is a resubmission each time, never "another hash", and never bytes to undo."""
    from xds.database import write_transaction
    from xds.repository.service import RepositoryService, _Incoming
    from xds.soap.envelope import Attachment

    async def never(_sub):  # type: ignore[no-untyped-def]
        raise AssertionError("not registered here")

    repo = RepositoryService("r", "1.2.3.4", tmp_path, engine, never, lambda uid, rid: True)
    sha1, size = repo.store.put_bytes(b"a document sent twice")
    doc = samples.submission().submission.documents[0]
    uid = doc.unique_id

    def incoming() -> list[_Incoming]:
        return [_Incoming(doc, Attachment("cid", "text/plain", sha1=sha1, size=size), sha1, size)]

    with write_transaction(engine) as conn:
        repo._record(conn, incoming(), "stored")
    again = incoming()
    with write_transaction(engine) as conn:
        repo._record(conn, again, "stored")
        conn.rollback()
    with write_transaction(engine) as conn:
        repo._record(conn, again, "stored")
    assert again[0].resubmitted and again[0].brought == ""
    with engine.connect() as conn:
        assert conn.execute(select(rd.c.unique_id, rd.c.sha1)).all() == [(uid, sha1)]
