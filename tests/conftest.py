"""Fixtures shared by every suite: the shared/ folder, databases, a running server.

``XDS_SHARED_DIR`` points at the shared material (standards, NIST kit); default ``../shared``.
Outside CI a missing folder skips the tests that need it, with the reason; in CI it fails them.
``XDS_TEST_DATABASE_URL`` (a PostgreSQL URL) makes every database fixture a fresh PostgreSQL
database instead of a SQLite file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("XDS_SHARED_DIR", REPO.parent / "shared")).resolve()


def require_shared(*parts: str) -> Path:
    """The path under shared/, or skip (outside CI) / fail (in CI) when it is missing."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: set XDS_SHARED_DIR to the shared/ folder (standards, NIST test kit)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def standards(shared: Path) -> Path:
    return require_shared("standards", "ihe-iti")


@pytest.fixture(scope="session")
def testkit(shared: Path) -> Path:
    return require_shared("conformance", "nist-testkit")


# --- databases --------------------------------------------------------------------------------------
def _postgres_admin_url() -> str | None:
    return os.environ.get("XDS_TEST_DATABASE_URL") or None


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database: SQLite in tmp_path, or a new PostgreSQL database."""
    admin = _postgres_admin_url()
    if admin is None:
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    name = f"xds_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from registry.database import migrate, open_engine

    eng = open_engine(database_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def backend() -> str:
    return "postgresql" if _postgres_admin_url() else "sqlite"
