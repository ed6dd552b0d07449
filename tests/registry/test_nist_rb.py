"""The NIST test kit's R.b (Register.b) collection replayed against ``xds serve`` over HTTP and MLLP.

Every RegisterTransaction step must end as its test plan expects (ExpectedStatus, ExpectedErrorCode,
ExpectedErrorMessage). Stored-query evaluation steps are judged once ITI-18 is served; until then
the runner reports them as not applicable, by name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import RunningServer, make_config, new_database, require_shared, shared_dir

from xds.conformance.runner import Session, Target
from xds.conformance.testplan import REGISTER, load_collection


def rb_tests() -> list[str]:
    """The R.b collection's test ids; one placeholder when the kit is absent (it then skips/fails)."""
    path = shared_dir() / "conformance" / "nist-testkit"
    return load_collection(path, "R.b") if path.exists() else ["(kit missing)"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    kit = require_shared("conformance", "nist-testkit")
    tmp = tmp_path_factory.mktemp("rb")
    with new_database(tmp) as url:
        # The NIST plans use patients of their own assigning authority: the plain IHE profile.
        cfg = make_config(tmp / "data", url, profile="none")
        with RunningServer(cfg) as server:
            yield Session(kit, Target(f"{server.url}/registry", ("127.0.0.1", cfg.registry.mllp_port)))


@pytest.mark.parametrize("test_id", rb_tests())
def test_rb(session: Session, test_id: str) -> None:
    if test_id == "(kit missing)":
        require_shared("conformance", "nist-testkit")
    results = session.run_test(test_id)
    failed = [r for r in results if r.outcome == "failed"]
    registers = [r for r in results if r.transaction == REGISTER]
    assert registers, f"{test_id} has no register step"
    assert not failed, "\n".join(f"{r.section}/{r.step}: {r.reason}" for r in failed)
