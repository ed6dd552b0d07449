"""Helpers for the tests that run ``xds serve`` as an operator would and inject faults into it:
a server process, ITI-41 and ITI-18 over HTTP, a private PostgreSQL, a small file system, and
the check that the repository holds exactly the bytes its rows point to."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
from sqlalchemy import select
from support import free_port

from xds import samples
from xds.client import Outcome, RepositoryClient, describe_files
from xds.database import open_engine
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response
from xds.repository.blobstore import BlobStore
from xds.repository.schema import repository_documents as rd
from xds.soap.envelope import build_request
from xds.soap.mtom import parse_message

PATIENT = samples.patient_cx("13116900216")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    database_url: str
    log: Path  # the server's standard error

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is not None:
            print(self.log.read_text()[-20000:])
        self.log.unlink(missing_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    data_dir: Path,
    database_url: str,
    *,
    port: int = 0,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Server:
    """``xds serve`` in its own process, answering /health within 60 s."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "xds.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--database-url", database_url, *args]
    log = tempfile.NamedTemporaryFile(prefix="xds-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return Server(proc, port, data_dir, database_url, Path(log.name))
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(Path(log.name).read_text()) from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def provide(client: RepositoryClient, path: Path, data: bytes) -> tuple[Outcome, str]:
    """ITI-41 of one document with ``data``; (outcome, its uniqueId)."""
    path.write_bytes(data)
    sub, docs = describe_files([path], PATIENT)
    return client.provide_and_register(sub, docs), sub.documents[0].unique_id or ""


def find_documents(http: httpx.Client, url: str, patient: str = PATIENT) -> tuple[str, list[str], int]:
    """ITI-18 FindDocuments (Approved) over HTTP: (status, error codes, number of entries)."""
    body = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        '<query:ResponseOption returnType="ObjectRef" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{escape(patient)}'</rim:Value>"
        "</rim:ValueList></rim:Slot>"
        '<rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList><rim:Value>(\'urn:oasis:names:tc:ebxml-regrep:'
        "StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>"
        "</rim:AdhocQuery></query:AdhocQueryRequest>"
    )
    data, content_type = build_request(v.ACTION_STORED_QUERY, body.encode(), to=url)
    response = http.post(url, content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text[:500]
    message = parse_message(response.headers["content-type"], response.content)
    status, errors = parse_registry_response(message.body)
    refs = message.body.iter(f"{{{v.NS_RIM}}}ObjectRef")
    return status, [e.code for e in errors], sum(1 for _ in refs)


def leftovers(data_dir: Path, database_url: str) -> dict[str, object]:
    """What the default repository holds beyond its stored rows: blobs no row points to, rows
    whose blob is missing, pending rows, spooled or temporary files."""
    store = BlobStore(data_dir / "repositories" / "default")
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(rd.c.sha1, rd.c.state)).all()
    finally:
        engine.dispose()
    blobs = set(store.all_blobs())
    referenced = {r.sha1 for r in rows}
    return {
        "orphan_blobs": len(blobs - referenced),
        "missing_blobs": len(referenced - blobs),
        "pending_rows": sum(1 for r in rows if r.state != "stored"),
        "tmp_files": len(store.spooled_files()),
    }


NOTHING_LEFT = {"orphan_blobs": 0, "missing_blobs": 0, "pending_rows": 0, "tmp_files": 0}


def wait_for_nothing_left(data_dir: Path, database_url: str, seconds: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        found = leftovers(data_dir, database_url)
        if found == NOTHING_LEFT or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PrivatePostgres:
    """A PostgreSQL server of this test's own (Debian's binaries, run as user postgres when the
    test runs as root), on 127.0.0.1 and a free port: it can be stopped and started at will."""

    def __init__(self, root: Path) -> None:
        bindir = postgres_bin()
        assert bindir is not None
        self.bin = bindir
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "pg.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]

    def init(self) -> None:
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres")
            shutil.chown(self.data.parent, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="xds-pg-"))
    pg = PrivatePostgres(root)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        with contextlib.suppress(Exception):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def small_filesystem(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``path`` (needs the right to mount: root in CI)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(tempfile.mkdtemp(prefix="xds-mount-"))
    try:
        with small_filesystem(probe, 1):
            return True
    except (subprocess.CalledProcessError, OSError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def fill(path: Path, leave_bytes: int) -> Path:
    """A file that takes all but about ``leave_bytes`` of the file system holding ``path``."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free
    with open(filler, "wb") as fh:
        remaining = max(0, free - leave_bytes)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            fh.write(block[: min(len(block), remaining)])
            remaining -= min(len(block), remaining)
    return filler


def slow_provide(
    url: str, release: threading.Event, started: threading.Event, answer: dict[str, object] | None = None
) -> None:
    """An ITI-41 whose 1 MB document stops arriving half-way until ``release`` (or the server dies)."""
    from xds.client import describe_files
    from xds.metadata import ebrim
    from xds.soap.envelope import envelope_bytes
    from xds.soap.mtom import multipart_content_type, new_boundary

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"xds-slow-{os.getpid()}"
    path.write_bytes(b"x")
    sub, _ = describe_files([path], PATIENT)
    path.unlink()
    doc_id = sub.documents[0].id
    body = (
        f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
        + ebrim.submit_objects_request_bytes(sub)
        + f'<xdsb:Document id="{doc_id}"><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:d@x"/></xdsb:Document>'.encode()
        + b"</xdsb:ProvideAndRegisterDocumentSetRequest>"
    )
    envelope = envelope_bytes(v.ACTION_PROVIDE_AND_REGISTER, body, to=url, reply_to_anonymous=True)
    boundary = new_boundary()

    def parts():  # type: ignore[no-untyped-def]
        yield (
            f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
            f'type="application/soap+xml"\r\nContent-ID: <root@x>\r\n\r\n'
        ).encode() + envelope
        yield f"\r\n--{boundary}\r\nContent-Type: application/pdf\r\nContent-ID: <d@x>\r\n\r\n".encode()
        yield os.urandom(512 * 1024)
        started.set()
        release.wait(30)
        yield os.urandom(512 * 1024) + f"\r\n--{boundary}--\r\n".encode()

    ctype = multipart_content_type(boundary, "root@x", v.ACTION_PROVIDE_AND_REGISTER)
    try:
        response = httpx.post(url, content=parts(), headers={"Content-Type": ctype}, timeout=30)
    except httpx.HTTPError as exc:  # its worker was killed
        if answer is not None:
            answer["error"] = exc
        return
    if answer is not None:
        from xds.client import _outcome

        answer["outcome"] = _outcome(response.headers.get("content-type", ""), response.content)


def register(http: httpx.Client, url: str) -> tuple[str, list[str]]:
    """ITI-42 of a sample submission for PATIENT over HTTP: (status, error codes)."""
    from xds.metadata import ebrim

    sub = samples.submission(PATIENT).submission
    data, content_type = build_request(v.ACTION_REGISTER, ebrim.submit_objects_request_bytes(sub), to=url)
    response = http.post(url, content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text[:500]
    message = parse_message(response.headers["content-type"], response.content)
    status, errors = parse_registry_response(message.body)
    return status, [e.code for e in errors]
