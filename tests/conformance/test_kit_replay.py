"""The NIST kit's collections replayed against a deployment: every test's outcome is the one
tests/conformance/baseline.json names. Any change of outcome — a test newly failing, newly passing,
newly not applicable — fails until the baseline is updated in the same commit (the failure prints
the collection's new entry)."""

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


@pytest.fixture(scope="module")
def xua_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The XUA collections run against a deployment that requires the trust model."""
    with kit_session(tmp_path_factory.mktemp("kit-xua"), xua=True) as running:
        yield running


@pytest.fixture(scope="module")
def xca_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The responding-gateway collections load their own data set (12318) for the session's patient:
    a deployment of their own, as the toolkit gives a gateway under test."""
    with kit_session(tmp_path_factory.mktemp("kit-xca")) as running:
        yield running


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_collection_matches_baseline(request: pytest.FixtureRequest, collection: str) -> None:
    fixture = "xua_session" if collection.endswith("_xua") else "session"
    if collection in ("rg(xca)", "ig(xca)"):
        fixture = "xca_session"
    session = request.getfixturevalue(fixture)
    reports = report.run_collection(session, collection)
    outcomes = {r.test_id: r.outcome for r in reports}
    expected = BASELINE[collection]
    changed = {
        test: f"{expected.get(test, 'absent')} -> {outcomes.get(test, 'absent')}"
        for test in sorted(set(outcomes) | set(expected))
        if outcomes.get(test) != expected.get(test)
    }
    details = "\n".join(f"{r.test_id}: {r.outcome} {r.reason}" for r in reports if r.test_id in changed)
    assert not changed, (
        f"{collection}: outcomes changed {changed}\n{details}\n"
        f"new baseline entry: {json.dumps({collection: outcomes}, indent=2)}"
    )
    for r in reports:  # a test not passed always says why
        assert r.outcome == "passed" or r.reason, r.test_id
