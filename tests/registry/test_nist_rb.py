"""The NIST test kit's R.b (Register.b) collection replayed against ``xds serve`` over HTTP and MLLP.

Every RegisterTransaction step must end as its test plan expects (ExpectedStatus, ExpectedErrorCode,
ExpectedErrorMessage); the stored-query steps that check what was stored are judged too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import KIT_MISSING, kit_session, kit_test_ids, require_kit

from xds.conformance.runner import Session
from xds.conformance.testplan import REGISTER


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with kit_session(tmp_path_factory.mktemp("rb")) as running:
        yield running


@pytest.mark.parametrize("test_id", kit_test_ids("R.b"))
def test_rb(session: Session, test_id: str) -> None:
    if test_id == KIT_MISSING:
        require_kit()
    results = session.run_test(test_id)
    failed = [r for r in results if r.outcome == "failed"]
    registers = [r for r in results if r.transaction == REGISTER]
    assert registers, f"{test_id} has no register step"
    assert not failed, "\n".join(f"{r.section}/{r.step}: {r.reason}" for r in failed)
