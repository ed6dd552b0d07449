"""``xds restore DIR`` of a damaged or forged backup: refused with a clear message, before anything
is written, so the empty deployment stays empty and takes the sound backup afterwards (served and
retrieved over HTTP)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from operating import provide, start_server

from xds.client import RepositoryClient
from xds.repository.service import persistent_unique_id


def _xds(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xds.cli", *argv], capture_output=True, text=True, timeout=300
    )


def _sqlite(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'registry.db'}"


def _manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def tamper(backup: Path) -> None:
        manifest = json.loads((backup / "backup.json").read_text())
        (backup / "backup.json").write_text(json.dumps(change(manifest)))

    return tamper


def _first_blob(backup: Path) -> Path:
    return next(p for p in (backup / "repositories" / "default" / "blobs").glob("*/*/*") if p.is_file())


def _set(d: dict, key: str, value: object) -> dict:
    d[key] = value
    return d


TAMPERED: dict[str, Callable[[Path], None]] = {
    "manifest not JSON": lambda b: (b / "backup.json").write_text("not json"),
    "manifest a list": _manifest(lambda m: [m]),
    "manifest without database": _manifest(lambda m: {k: x for k, x in m.items() if k != "database"}),
    "unknown database kind": _manifest(lambda m: _set(m, "database", "oracle")),
    "repositories not a table": _manifest(lambda m: _set(m, "repositories", ["default"])),
    "unique id not an OID": _manifest(
        lambda m: _set(m, "repositories", {"default": {"unique_id": "../x\nforged", "blobs": 1}})
    ),
    "blob altered": lambda b: _first_blob(b).write_bytes(b"altered"),
    "database not SQLite": lambda b: (b / "registry.db").write_bytes(b"garbage" * 100),
    "database missing": lambda b: (b / "registry.db").unlink(),
}


@pytest.fixture
def sound_backup(tmp_path: Path) -> tuple[Path, dict[str, bytes], str]:
    tmp = tmp_path / "source"
    data_dir = tmp / "data"
    sent: dict[str, bytes] = {}
    with start_server(data_dir, _sqlite(data_dir)) as server:
        with RepositoryClient(f"{server.url}/repository", timeout=60) as client:
            for i in range(2):
                data = os.urandom(5000 + i)
                outcome, uid = provide(client, tmp / f"doc{i}", data)
                assert outcome.ok, outcome.errors
                sent[uid] = data
    done = _xds("backup", str(tmp / "backup"), "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return tmp / "backup", sent, persistent_unique_id(data_dir / "repositories" / "default")


def test_damaged_backups_are_refused_before_anything_is_written(
    sound_backup: tuple[Path, dict[str, bytes], str], tmp_path: Path
) -> None:
    backup, sent, unique_id = sound_backup
    fresh = tmp_path / "fresh"
    for case, tamper in TAMPERED.items():
        copy = tmp_path / case.replace(" ", "-")
        shutil.copytree(backup, copy)
        tamper(copy)
        refused = _xds("restore", str(copy), "--data-dir", str(fresh))
        assert refused.returncode == 1, (case, refused.stdout + refused.stderr)
        assert refused.stderr.startswith("xds: restore failed: "), (case, refused.stderr)
        written = [p for p in fresh.rglob("*") if p.is_file() and p.stat().st_size and p.suffix != ".owner"]
        assert not written, (case, written)
    # the deployment is still empty: the sound backup goes in and is served
    done = _xds("restore", str(backup), "--data-dir", str(fresh))
    assert done.returncode == 0, done.stderr
    with start_server(fresh, _sqlite(fresh)) as server:
        with RepositoryClient(f"{server.url}/repository", timeout=60) as client:
            outcome, found = client.retrieve(unique_id, sorted(sent), tmp_path / "out")
    assert outcome.ok, outcome.errors
    assert {d.unique_id: d.path.read_bytes() for d in found} == sent
