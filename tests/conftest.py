"""Fixtures shared by every suite; the helpers behind them live in tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import Engine
from support import (
    KIT_SKIP,
    KIT_SOURCE,
    RunningServer,
    kit_dir,
    make_config,
    new_database,
    postgres_admin_url,
    require_kit,
)


@pytest.fixture(scope="session")
def standards() -> Path:
    """The official IHE / OASIS / W3C schemas shipped with the project (wsdl/ihe-iti, package xds.wsdl)."""
    from xds.schemas import standards_dir

    return standards_dir()


@pytest.fixture(scope="session")
def registry_wsdl() -> str:
    """This deployment's registry WSDL (wsdl/registry.wsdl), its imports resolving to the shipped schemas.

    The official XDS.b_DocumentRegistry.wsdl also declares the HL7 v3 patient identity feed (ITI-44),
    whose HL7 v3 schemas are not shipped; this one declares the same ITI-42 and ITI-18 operations."""
    from xds.schemas import wsdl_dir

    return str(wsdl_dir() / "registry.wsdl")


@pytest.fixture(scope="session")
def testkit() -> Path:
    return require_kit()


@pytest.fixture(scope="session")
def lcm_schema(standards: Path) -> etree.XMLSchema:
    """ebRS 3.0 lcm.xsd, loaded from its path so its relative imports (rim, rs, xml.xsd) resolve."""
    return etree.XMLSchema(etree.parse(str(standards / "iti" / "schema" / "ebRS" / "lcm.xsd")))


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with new_database(tmp_path) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from xds.database import migrate, open_engine

    eng = open_engine(database_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def backend() -> str:
    return "postgresql" if postgres_admin_url() else "sqlite"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    """A registry served over real HTTP (and MLLP) on loopback, fresh database."""
    with RunningServer(make_config(tmp_path / "data", database_url)) as running:
        yield running


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """One line at the end of a run (after the short summary) saying how many tests skipped for
    want of the NIST test kit, and where the kit comes from."""
    result = yield
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if KIT_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped for want of the NIST XDS test kit ({kit_dir()} is missing): "
            f"it comes from {KIT_SOURCE}; set XDS_SHARED_DIR to a folder holding it as "
            "conformance/nist-testkit"
        )
    return result
