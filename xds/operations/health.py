"""Liveness and readiness (``GET /health``, ``GET /ready``) and the checks ``xds serve`` makes
before it starts: is the database reachable and its schema current, is every data directory
writable with free space above ``[server] min_free_mb``."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from xds.database import unapplied_migrations

if TYPE_CHECKING:
    from xds.config import Config


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {'ok' if self.ok else 'FAIL'} ({self.detail})"


def database_check(engine: Engine) -> Check:
    url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach it is the answer
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        return Check("database", False, f"{url} cannot be reached: {reason}")
    return Check("database", True, url)


def migrations_check(engine: Engine) -> Check:
    try:
        missing = unapplied_migrations(engine)
    except Exception as exc:
        return Check("migrations", False, f"cannot read the schema version: {exc}")
    if missing:
        return Check("migrations", False, f"not applied: {', '.join(missing)} (restart `xds serve` to apply)")
    return Check("migrations", True, "current")


def _unwritable(path: Path) -> str:
    """Why ``path`` cannot take a file ("" when it can). Each check writes a file of its own: checks
    that run at once (two /ready probes) must not remove each other's."""
    probe = path / f".xds-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"probe")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        return f"{path} is not writable: {exc.strerror or exc}"
    return ""


def directory_check(name: str, path: str | Path, min_free_mb: int) -> Check:
    """``path`` exists, takes a file, and has at least ``min_free_mb`` MB free."""
    path = Path(path)
    problem = _unwritable(path)
    if problem:
        return Check(name, False, problem)
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        return Check(name, False, f"{path} has {free_mb:.0f} MB free, below min_free_mb = {min_free_mb}")
    return Check(name, True, f"{path}, {free_mb:.0f} MB free")


def readiness(engine: Engine, directories: dict[str, str], min_free_mb: int) -> list[Check]:
    """Every check ``/ready`` makes: database, migrations, each data directory."""
    database = database_check(engine)
    checks = [database]
    if database.ok:
        checks.append(migrations_check(engine))
    checks += [directory_check(name, path, min_free_mb) for name, path in directories.items()]
    return checks


def startup_problems(config: Config) -> tuple[list[str], list[str]]:
    """What stops ``xds serve`` from starting (errors) and what it should hear (warnings): the
    data directory and repository stores writable and with free space, the database reachable."""
    from xds.database import open_engine_nopool

    errors: list[str] = []
    warnings: list[str] = []
    stores = {"data_dir": config.server.data_dir}
    for rc in config.repositories:
        stores[f"repository {rc.name}"] = rc.store(config.server.data_dir)
    for name, path in stores.items():
        problem = _unwritable(Path(path))
        check = directory_check(name, path, config.server.min_free_mb)
        if problem:
            errors.append(check.line())
        elif not check.ok:
            warnings.append(check.line())
    if errors:
        return errors, warnings
    engine = open_engine_nopool(config.registry.url(config.server.data_dir))
    try:
        check = database_check(engine)
    finally:
        engine.dispose()
    if not check.ok:
        errors.append(check.line())
    return errors, warnings
