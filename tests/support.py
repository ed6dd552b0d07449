"""Helpers shared by the test suites: the shared/ folder, fresh databases, a running server.

``XDS_SHARED_DIR`` points at the shared material (standards, NIST kit); default ``../shared``.
Outside CI a missing folder skips the tests that need it, with the reason; in CI it fails them.
``XDS_TEST_DATABASE_URL`` (a PostgreSQL URL) makes every fresh database a new PostgreSQL database
instead of a SQLite file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

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


def postgres_admin_url() -> str | None:
    return os.environ.get("XDS_TEST_DATABASE_URL") or None


@contextlib.contextmanager
def new_database(tmp_dir: Path) -> Iterator[str]:
    """A fresh, empty registry database: SQLite in tmp_dir, or a new PostgreSQL database."""
    admin = postgres_admin_url()
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
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
                **config.server.uvicorn_tls(),
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.server.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

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


def zeep_send(client, service, operation: str, payload, **placeholder):  # type: ignore[no-untyped-def]
    """Call ``operation`` with zeep, its envelope carrying ``payload`` (an lxml element) as the body.

    zeep builds the envelope from the official WSDL (SOAP 1.2 binding, wsa:Action, MessageID, To) and
    parses the answer with the WSDL's schemas. The body is put in as an element because the ebRIM
    registry object list is an XSD substitution group, which zeep cannot render from Python values;
    ``placeholder`` gives zeep the minimal arguments it needs to build the operation's envelope.
    Returns the raw HTTP response and zeep's parsed result.
    """
    from xds.metadata import vocabulary as v

    binding = service._binding
    options = service._binding_options
    envelope, http_headers = binding._create(operation, (), placeholder, client=client, options=options)
    body = envelope.find(f"{{{v.NS_SOAP12}}}Body")
    body[:] = [payload]
    response = client.transport.post_xml(options["address"], envelope, http_headers)
    result = (
        binding.process_reply(client, binding.get(operation), response)
        if response.status_code == 200
        else None
    )
    return response, result


KIT_MISSING = "(kit missing)"


def kit_test_ids(collection: str) -> list[str]:
    """A NIST kit collection's test ids; one placeholder when the kit is absent (it then skips/fails)."""
    from xds.conformance.testplan import load_collection

    path = shared_dir() / "conformance" / "nist-testkit"
    return load_collection(path, collection) if path.exists() else [KIT_MISSING]


@contextlib.contextmanager
def kit_session(tmp: Path):  # type: ignore[no-untyped-def]
    """A replay session against a deployment started for it (fresh database, plain IHE profile)."""
    from xds.conformance.deployment import local_deployment
    from xds.conformance.runner import Session

    kit = require_shared("conformance", "nist-testkit")
    with new_database(tmp) as url, local_deployment(url, str(tmp / "data")) as target:
        yield Session(kit, target)


def run_bench(*argv: str) -> int:
    """``xds bench ARGV...`` in this process (its output goes to stdout); the exit status."""
    import argparse

    from xds import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(list(argv)))
