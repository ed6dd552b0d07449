"""Fixtures shared by every suite: the shared/ folder, databases, a running server.

``XDS_SHARED_DIR`` points at the shared material (standards, NIST kit); default ``../shared``.
Outside CI a missing folder skips the tests that need it, with the reason; in CI it fails them.
``XDS_TEST_DATABASE_URL`` (a PostgreSQL URL) makes every database fixture a fresh PostgreSQL
database instead of a SQLite file.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def new_database(tmp_dir: Path) -> Iterator[str]:
    """A fresh, empty registry database: SQLite in tmp_dir, or a new PostgreSQL database."""
    admin = _postgres_admin_url()
    if admin is None:
        yield f"sqlite:///{tmp_dir / 'registry.db'}"
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
def database_url(tmp_path: Path) -> Iterator[str]:
    with new_database(tmp_path) as url:
        yield url


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


# --- a running deployment ----------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """``xds serve``'s application under uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        import threading

        import uvicorn

        from xds.server import build_app

        self.config = config
        self.app = build_app(config)
        self.port = config.server.port
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def make_config(data_dir: Path, database_url: str, **registry: object):  # type: ignore[no-untyped-def]
    from xds.config import Config

    cfg = Config()
    cfg.server.data_dir = str(data_dir)
    cfg.server.port = free_port()
    cfg.registry.database_url = database_url
    cfg.registry.mllp_port = free_port()
    for key, value in registry.items():
        setattr(cfg.registry, key, value)
    return cfg


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    """A registry served over real HTTP (and MLLP) on loopback, fresh database."""
    with RunningServer(make_config(tmp_path / "data", database_url)) as running:
        yield running
