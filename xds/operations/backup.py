"""``xds backup DIR`` and ``xds restore DIR``: a consistent copy of the registry and every
repository, made while the service runs, and brought back into an empty deployment.

The order is what makes the copy consistent. The database is copied first, as one snapshot:
SQLite's online backup API (``sqlite3.Connection.backup``, under one read transaction, which in WAL
mode never stops writers), or ``pg_dump`` of a snapshot exported by a transaction that stays open
while the rows are read (``pg_export_snapshot``, ``pg_dump --snapshot``). Then the blobs that the
snapshot's repository rows point to are copied, each verified against its SHA-1. Blobs are
immutable and named by their content, so a document stored after the snapshot brings nothing the
copy needs, and one removed (ITI-86) between the snapshot and its copy is reported: its row is in
the copy, its bytes are not — as after that removal. ``DIR/backup.json`` says what was copied.

On SQLite the audit records have a database file of their own (``audit.db``, see
:func:`xds.database.audit_store.audit_url`): it is copied after the registry's, with the same
online backup API, and restored beside it; so are the signed messages seen
(``registry-replay.db``, :func:`xds.database.replay.replay_path`), so that a restored server still
refuses their replays. On PostgreSQL both are in the one dump.

Restoring copies the database back (SQLite file, or ``pg_restore`` into the configured, empty
PostgreSQL database), then the blobs, and brings the schema to the current migrations; the
next ``xds serve`` settles any row that was pending at the snapshot, as after a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, make_url, select, text

from xds.config import Config
from xds.database import migrate, open_engine_nopool
from xds.database.audit_store import audit_url
from xds.database.replay import replay_path
from xds.repository.blobstore import BlobStore
from xds.repository.schema import repository_documents as rd
from xds.repository.service import persistent_unique_id

MANIFEST = "backup.json"
SQLITE_FILE = "registry.db"
AUDIT_FILE = "audit.db"
REPLAY_FILE = "registry-replay.db"
PG_DUMP_FILE = "registry.pgdump"


class BackupError(Exception):
    """The backup or restore cannot be made; the message says why."""


@dataclass
class Summary:
    database: str
    documents: int = 0
    blobs: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)  # removed after the snapshot

    def line(self) -> str:
        gone = f"; {len(self.missing)} removed while it ran (rows kept, bytes gone)" if self.missing else ""
        return f"{self.documents} documents, {self.blobs} blobs ({self.bytes} bytes), database {self.database}{gone}"


def pg_tool(name: str) -> str:
    """The newest Debian PostgreSQL client tool ``name`` (pg_dump, pg_restore), else the PATH's."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    tool = str(found[-1]) if found else shutil.which(name)
    if not tool:
        raise BackupError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return tool


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq reads it (no +driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _stores(config: Config) -> dict[str, BlobStore]:
    return {rc.name: BlobStore(rc.store(config.server.data_dir)) for rc in config.repositories}


def backup(config: Config, target: Path) -> Summary:
    """A consistent copy of the registry and every repository into the empty directory ``target``."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    url = config.registry.url(config.server.data_dir)
    audit = replay = False
    if url.startswith("sqlite"):
        rows = _sqlite_snapshot(url, target / SQLITE_FILE)
        summary = Summary("sqlite")
        audit = _sqlite_copy(audit_url(url), target / AUDIT_FILE)
        # the signed messages seen, so a restored server still refuses their replays
        replay = _sqlite_copy(f"sqlite:///{_replay_file(url)}", target / REPLAY_FILE)
    else:
        rows = _postgres_snapshot(url, target / PG_DUMP_FILE)
        summary = Summary("postgresql")
    repositories = {}
    for rc in config.repositories:
        store = BlobStore(rc.store(config.server.data_dir))
        unique_id = rc.unique_id or persistent_unique_id(store.root)
        out = BlobStore(target / "repositories" / rc.name)
        (out.root / "repository-unique-id").write_text(unique_id + "\n")
        mine = sorted({sha1 for repo, sha1 in rows if repo == unique_id})
        summary.documents += sum(1 for repo, _ in rows if repo == unique_id)
        for sha1 in mine:
            size = _copy_blob(store, out, sha1)
            if size is None:
                summary.missing.append(sha1)
                continue
            summary.blobs += 1
            summary.bytes += size
        repositories[rc.name] = {"unique_id": unique_id, "blobs": len(mine)}
    manifest = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": summary.database,
        "audit_file": AUDIT_FILE if audit else "",
        "replay_file": REPLAY_FILE if replay else "",
        "repositories": repositories,
        "missing_blobs": summary.missing,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _sqlite_snapshot(url: str, out: Path) -> list[tuple[str, str]]:
    """The database copied with SQLite's online backup API in one step (one read snapshot);
    the repository rows of that copy."""
    source_path = make_url(url).database
    if not source_path or not Path(source_path).exists():
        raise BackupError(f"no SQLite database at {source_path}")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    copy = sqlite3.connect(out)
    try:
        source.backup(copy)  # pages=-1: all at once, under one read transaction
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        found = copy.execute("SELECT repository_id, sha1 FROM repository_documents").fetchall()
    finally:
        copy.close()
        source.close()
    return [(r, s) for r, s in found]


def _replay_file(registry_url: str) -> Path:
    return replay_path(make_url(registry_url).database or "")


def _sqlite_copy(url: str, out: Path) -> bool:
    """The SQLite database at ``url`` copied with the online backup API, if there is one."""
    source_path = make_url(url).database
    if not source_path or not Path(source_path).exists():
        return False
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    copy = sqlite3.connect(out)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
        source.close()
    return True


def _postgres_snapshot(url: str, out: Path) -> list[tuple[str, str]]:
    """pg_dump (custom format) of a snapshot this transaction exports and holds while it reads
    the repository rows: the dump and the rows are the same instant."""
    engine = open_engine_nopool(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            cmd = [pg_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--no-owner"]
            cmd += ["--file", str(out), _libpq_url(url)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
            found = conn.execute(select(rd.c.repository_id, rd.c.sha1)).all()
            conn.execute(text("COMMIT"))
    finally:
        engine.dispose()
    return [(r, s) for r, s in found]


def _copy_blob(store: BlobStore, out: BlobStore, sha1: str) -> int | None:
    """Copy one blob, checking its SHA-1; its size, or None when it is gone."""
    try:
        source = store.open(sha1)
    except FileNotFoundError:
        return None
    digest = hashlib.sha1()
    size = 0
    dest = out.path(sha1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with source, open(dest, "wb") as fh:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    if digest.hexdigest() != sha1:
        raise BackupError(f"blob {sha1} in {store.root} does not match its SHA-1: the store is damaged")
    return size


def restore(config: Config, source: Path) -> Summary:
    """Bring a backup made by :func:`backup` into this configuration's empty deployment."""
    source = Path(source)
    manifest = _read_manifest(source)
    url = config.registry.url(config.server.data_dir)
    summary = Summary(manifest["database"])
    stores = _stores(config)
    for name in manifest["repositories"]:
        if name not in stores:
            raise BackupError(f"the backup holds repository {name!r}, which this configuration lacks")
        if any(stores[name].all_blobs()):
            raise BackupError(f"repository {name} at {stores[name].root} is not empty")
    if manifest["database"] == "sqlite" and not url.startswith("sqlite"):
        raise BackupError("the backup is of an SQLite registry; restore it with an SQLite database_url")
    _check_backup(source, manifest)  # all of it, before anything is written
    if manifest["database"] == "sqlite":
        _restore_sqlite(source / SQLITE_FILE, Path(make_url(url).database or ""))
        if manifest.get("audit_file"):
            _restore_sqlite(source / AUDIT_FILE, Path(make_url(audit_url(url)).database or ""))
        if manifest.get("replay_file"):
            _restore_sqlite(source / REPLAY_FILE, _replay_file(url))
    else:
        if url.startswith("sqlite"):
            raise BackupError(
                "the backup is of a PostgreSQL registry; give --database-url postgresql+psycopg://…"
            )
        _restore_postgres(source / PG_DUMP_FILE, url)
    for name, info in manifest["repositories"].items():
        store, saved = stores[name], BlobStore(source / "repositories" / name)
        (store.root / "repository-unique-id").write_text(info["unique_id"] + "\n")
        for sha1 in saved.all_blobs():
            size = _copy_blob(saved, store, sha1)
            summary.blobs += 1
            summary.bytes += size or 0
    engine = open_engine_nopool(url)
    try:
        migrate(engine)
        summary.documents = _count_documents(engine)
    finally:
        engine.dispose()
    if audit_url(url) != url and Path(make_url(audit_url(url)).database or "").exists():
        audit = open_engine_nopool(audit_url(url))
        try:
            migrate(audit, "audit@head")
        finally:
            audit.dispose()
    summary.missing = list(manifest.get("missing_blobs", []))
    return summary


def _read_manifest(source: Path) -> dict:
    """``DIR/backup.json`` as :func:`backup` writes it, or BackupError naming what is wrong."""
    path = source / MANIFEST
    if not path.exists():
        raise BackupError(f"{source} holds no {MANIFEST}: not a backup made by `xds backup`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not JSON ({exc}): not a backup made by `xds backup`") from None
    repositories = manifest.get("repositories") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("database") not in ("sqlite", "postgresql")
        or not isinstance(repositories, dict)
        or not isinstance(manifest.get("missing_blobs", []), list)
    ):
        raise BackupError(f"{path} is not a manifest written by `xds backup` (format 1)")
    for name, info in repositories.items():
        unique_id = info.get("unique_id") if isinstance(info, dict) else None
        if not isinstance(unique_id, str) or not _OID.fullmatch(unique_id):
            raise BackupError(f"{path}: repository {name!r} has no uniqueId (an OID)")
    return manifest


_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def _check_backup(source: Path, manifest: dict) -> None:
    """Every part of the backup is readable and sound: the SQLite copy is a database that passes
    its quick check (or the dump is there), every blob matches its SHA-1."""
    if manifest["database"] == "sqlite":
        _check_sqlite(source / SQLITE_FILE)
        if manifest.get("audit_file"):
            _check_sqlite(source / AUDIT_FILE)
        if manifest.get("replay_file"):
            _check_sqlite(source / REPLAY_FILE)
    elif not (source / PG_DUMP_FILE).is_file():
        raise BackupError(f"{source / PG_DUMP_FILE} is missing")
    for name in manifest["repositories"]:
        saved = BlobStore(source / "repositories" / name)
        for sha1 in saved.all_blobs():
            digest = hashlib.sha1()
            try:
                with saved.open(sha1) as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            except OSError as exc:
                raise BackupError(f"blob {sha1} of repository {name} cannot be read: {exc}") from None
            if digest.hexdigest() != sha1:
                raise BackupError(
                    f"blob {sha1} of repository {name} does not match its SHA-1: the backup is damaged"
                )


def _check_sqlite(copy: Path) -> None:
    """The SQLite copy is there and passes its quick check."""
    if not copy.is_file():
        raise BackupError(f"{copy} is missing")
    try:
        db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{copy} is not a sound SQLite database: {exc}") from None
    if verdict != "ok":
        raise BackupError(f"{copy} is damaged: {verdict}")


def _restore_sqlite(copy: Path, database: Path) -> None:
    if database.exists() and database.stat().st_size > 0:
        raise BackupError(f"{database} exists: restore into an empty data directory")
    database.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    target = sqlite3.connect(database)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _restore_postgres(dump: Path, url: str) -> None:
    engine = open_engine_nopool(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
    finally:
        engine.dispose()
    if tables:
        raise BackupError("the PostgreSQL database is not empty: restore into a new database")
    cmd = [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--dbname", _libpq_url(url), str(dump)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def _count_documents(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(text("count(*)")).select_from(rd)).scalar_one())
