"""The NIST test kit's SQ.b (Stored Query) collection replayed against ``xds serve`` over HTTP and MLLP.

The kit loads its stored-query data set (12346, and 12374 under a second patient) through ITI-42,
then every StoredQueryTransaction step must end as its test plan expects: ExpectedStatus,
ExpectedErrorCode and ExpectedContents (counts of entries, sets, folders, associations and
ObjectRefs, statuses, submission-set shapes), judged by ``xds.conformance.contents``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import RunningServer, make_config, new_database, require_shared, shared_dir

from xds.conformance.runner import Session, Target
from xds.conformance.testplan import STORED_QUERY, load_collection


def sqb_tests() -> list[str]:
    """The SQ.b collection's test ids; one placeholder when the kit is absent (it then skips/fails)."""
    path = shared_dir() / "conformance" / "nist-testkit"
    return load_collection(path, "SQ.b") if path.exists() else ["(kit missing)"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    kit = require_shared("conformance", "nist-testkit")
    tmp = tmp_path_factory.mktemp("sqb")
    with new_database(tmp) as url:
        # The NIST plans use patients of their own assigning authority: the plain IHE profile.
        cfg = make_config(tmp / "data", url, profile="none")
        with RunningServer(cfg) as server:
            yield Session(kit, Target(f"{server.url}/registry", ("127.0.0.1", cfg.registry.mllp_port)))


@pytest.mark.parametrize("test_id", sqb_tests())
def test_sqb(session: Session, test_id: str) -> None:
    if test_id == "(kit missing)":
        require_shared("conformance", "nist-testkit")
    results = session.run_test(test_id)
    queries = [r for r in results if r.transaction == STORED_QUERY]
    assert queries, f"{test_id} has no stored query step"
    unjudged = [r for r in queries if r.outcome == "not applicable"]
    failed = [r for r in results if r.outcome == "failed"]
    assert not failed, "\n".join(f"{r.section}/{r.step}: {r.reason}" for r in failed)
    assert not unjudged, "\n".join(f"{r.section}/{r.step}: {r.reason}" for r in unjudged)
