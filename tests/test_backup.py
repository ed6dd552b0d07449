"""``xds backup DIR`` while ITI-41 goes on, then ``xds restore DIR`` into a fresh data directory
(and, on PostgreSQL, a fresh database): every document acknowledged before the backup began comes
back byte-identical, and so does every document the backup holds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from operating import NOTHING_LEFT, provide, start_server, wait_for_nothing_left
from sqlalchemy import select
from support import new_database

from xds.client import RepositoryClient
from xds.database import open_engine
from xds.database.audit_store import audit_url, messages
from xds.repository.schema import repository_documents as rd
from xds.repository.service import persistent_unique_id


def _xds(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xds.cli", *argv], capture_output=True, text=True, timeout=300
    )


def _uids(database_url: str) -> set[str]:
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(rd.c.unique_id).where(rd.c.state == "stored")).scalars())
    finally:
        engine.dispose()


def _audited(database_url: str) -> set[str]:
    """The ids of the ITI-41 audit records the deployment holds (its own audit database on SQLite)."""
    engine = open_engine(audit_url(database_url))
    try:
        return {uid for uid, xml in messages(engine) if "ITI-41" in xml}
    finally:
        engine.dispose()


def test_backup_while_serving_and_restore_into_a_fresh_deployment(tmp_path: Path, database_url: str) -> None:
    files = tmp_path / "files"
    files.mkdir()
    sent: dict[str, bytes] = {}
    data_dir = tmp_path / "data"
    with start_server(data_dir, database_url) as server:
        repository = f"{server.url}/repository"
        with RepositoryClient(repository, timeout=60) as client:
            for i in range(12):
                data = os.urandom(30_000 + 997 * i)
                outcome, uid = provide(client, files / f"before{i}", data)
                assert outcome.ok, outcome.errors
                sent[uid] = data
        before = dict(sent)
        deadline = time.monotonic() + 30
        while len(audited := _audited(database_url)) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(audited) >= 12, "the audit records of the provides were not stored"
        stop = threading.Event()

        def keep_providing() -> None:
            with RepositoryClient(repository, timeout=60) as client:
                i = 0
                while not stop.is_set() and i < 200:
                    data = os.urandom(20_000 + i)
                    outcome, uid = provide(client, files / f"during{i}", data)
                    i += 1
                    if outcome.ok:
                        sent[uid] = data

        writer = threading.Thread(target=keep_providing)
        writer.start()
        try:
            time.sleep(0.2)
            done = _xds(
                "backup",
                str(tmp_path / "backup"),
                "--data-dir",
                str(data_dir),
                "--database-url",
                database_url,
            )
        finally:
            stop.set()
            writer.join(timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("xds: backup ")
        print(done.stdout.strip(), f"(while {len(sent) - len(before)} more were provided)")
        refused = _xds(
            "backup", str(tmp_path / "backup"), "--data-dir", str(data_dir), "--database-url", database_url
        )
        assert refused.returncode == 1 and "is not empty" in refused.stderr

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with new_database(fresh) as restored_url:
        restored_dir = fresh / "data"
        done = _xds(
            "restore",
            str(tmp_path / "backup"),
            "--data-dir",
            str(restored_dir),
            "--database-url",
            restored_url,
        )
        assert done.returncode == 0, done.stderr
        print(done.stdout.strip())
        again = _xds(
            "restore",
            str(tmp_path / "backup"),
            "--data-dir",
            str(restored_dir),
            "--database-url",
            restored_url,
        )
        assert again.returncode == 1
        held = _uids(restored_url)
        assert audited <= _audited(restored_url)  # the audit records came back too
        assert set(before) <= held  # everything acknowledged before the backup began
        assert held <= set(sent)  # and nothing that was not acknowledged... or refused
        old_id = persistent_unique_id(data_dir / "repositories" / "default")
        assert persistent_unique_id(restored_dir / "repositories" / "default") == old_id
        with start_server(restored_dir, restored_url) as server:
            with RepositoryClient(f"{server.url}/repository", timeout=60) as client:
                outcome, found = client.retrieve(old_id, sorted(held), tmp_path / "out")
            assert outcome.ok, outcome.errors
            assert {d.unique_id for d in found} == held
            for doc in found:
                assert doc.path.read_bytes() == sent[doc.unique_id]
            assert wait_for_nothing_left(restored_dir, restored_url, 5) == NOTHING_LEFT


def test_the_replay_records_come_back_so_a_restored_server_refuses_replays(tmp_path: Path) -> None:
    """On SQLite the signed messages seen are kept in a file of their own (``registry-replay.db``);
    a backup without it would let a restored server accept once more a message signed minutes
    before the backup."""
    import datetime as dt

    from xds.config import Config
    from xds.database import migrate
    from xds.database.replay import DatabaseReplayStore, replay_engine
    from xds.operations.backup import backup, restore

    def deployment(data_dir: Path) -> tuple[Config, str]:
        config = Config()
        config.server.data_dir = str(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return config, config.registry.url(str(data_dir))

    config, url = deployment(tmp_path / "data")
    engine = open_engine(url)
    migrate(engine)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert DatabaseReplayStore(replay_engine(engine)).first_time("message:urn:uuid:1", expires)
    engine.dispose()
    backup(config, tmp_path / "backup")

    config, url = deployment(tmp_path / "fresh")
    restore(config, tmp_path / "backup")
    engine = open_engine(url)
    try:
        store = DatabaseReplayStore(replay_engine(engine))
        assert not store.first_time("message:urn:uuid:1", expires)  # seen before the backup
        assert store.first_time("message:urn:uuid:2", expires)
    finally:
        engine.dispose()
