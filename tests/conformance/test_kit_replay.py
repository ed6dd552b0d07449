"""The NIST kit's collections replayed against a deployment; passing counts never fall below the
baseline kept in tests/conformance/baseline.json (raised as more pass)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import kit_session

from xds.conformance import report
from xds.conformance.runner import Session

BASELINE = json.loads((Path(__file__).parent / "baseline.json").read_text())
COLLECTIONS = [name for name in BASELINE if not name.startswith("_")]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with kit_session(tmp_path_factory.mktemp("kit")) as running:
        yield running


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_collection_meets_baseline(session: Session, collection: str) -> None:
    reports = report.run_collection(session, collection)
    passed = sum(r.outcome == "passed" for r in reports)
    details = "\n".join(f"{r.test_id}: {r.outcome} {r.reason}" for r in reports if r.outcome != "passed")
    assert passed >= BASELINE[collection], (
        f"{collection}: {passed} passed < baseline {BASELINE[collection]}\n{details}"
    )
