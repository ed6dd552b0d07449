"""The NIST test kit's SQ.b (Stored Query) collection replayed against ``xds serve`` over HTTP and MLLP.

The kit loads its stored-query data set (12346, and 12374 under a second patient) through ITI-42,
then every StoredQueryTransaction step must end as its test plan expects: ExpectedStatus,
ExpectedErrorCode and ExpectedContents (counts of entries, sets, folders, associations and
ObjectRefs, statuses, submission-set shapes), judged by ``xds.conformance.contents``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import KIT_MISSING, kit_session, kit_test_ids, require_kit

from xds.conformance.runner import Session
from xds.conformance.testplan import STORED_QUERY


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with kit_session(tmp_path_factory.mktemp("sqb")) as running:
        yield running


@pytest.mark.parametrize("test_id", kit_test_ids("SQ.b"))
def test_sqb(session: Session, test_id: str) -> None:
    if test_id == KIT_MISSING:
        require_kit()
    results = session.run_test(test_id)
    queries = [r for r in results if r.transaction == STORED_QUERY]
    assert queries, f"{test_id} has no stored query step"
    unjudged = [r for r in queries if r.outcome == "not applicable"]
    failed = [r for r in results if r.outcome == "failed"]
    assert not failed, "\n".join(f"{r.section}/{r.step}: {r.reason}" for r in failed)
    assert not unjudged, "\n".join(f"{r.section}/{r.step}: {r.reason}" for r in unjudged)
