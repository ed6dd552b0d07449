"""The runner judges on the answers: a fake registry that answers wrongly makes tests fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import free_port

from xds.conformance import report
from xds.conformance.runner import Session, Target
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.registry_response import registry_response
from xds.soap.envelope import envelope_bytes


def fake_registry(answer: bytes) -> Starlette:
    async def endpoint(_: Request) -> Response:
        return Response(envelope_bytes(v.ACTION_REGISTER_RESPONSE, answer), media_type="application/soap+xml")

    return Starlette(routes=[Route("/registry", endpoint, methods=["POST"])])


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake_registry(request.param), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/registry"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("fake", [registry_response()], indirect=True)
def test_success_where_failure_is_expected_fails(fake: str, testkit: Path) -> None:
    session = Session(testkit, Target(registry_url=fake))
    r = report.run_test(session, "11996")  # expects Failure with XDSUnknownPatientId
    assert r.outcome == "failed"
    assert "expected status Failure, got Success" in r.reason


@pytest.mark.parametrize(
    "fake", [registry_response([XdsError(v.XDSRegistryError, "made up")])], indirect=True
)
def test_failure_where_success_is_expected_fails(fake: str, testkit: Path) -> None:
    session = Session(testkit, Target(registry_url=fake))
    # the session's patient would come from the feed test 15817; the fake has no feed
    session.reports[("15817", "pif", "step")] = {"$patientid$": session.fresh_patient()}
    r = report.run_test(session, "11990")
    assert r.outcome == "failed" and "XDSRegistryError" in r.reason


@pytest.mark.parametrize(
    "fake", [registry_response(status="urn:example:ResponseStatusType:Success")], indirect=True
)
def test_status_is_compared_as_the_whole_urn(fake: str, testkit: Path) -> None:
    session = Session(testkit, Target(registry_url=fake))
    session.reports[("15817", "pif", "step")] = {"$patientid$": session.fresh_patient()}
    r = report.run_test(session, "11990")
    assert r.outcome == "failed" and "got urn:example:ResponseStatusType:Success" in r.reason


INVALID = f'<rs:RegistryResponse xmlns:rs="{v.NS_RS}" status="{v.RESPONSE_SUCCESS}"><rs:Extra/></rs:RegistryResponse>'


@pytest.mark.parametrize("fake", [INVALID.encode()], indirect=True)
def test_an_answer_the_schema_refuses_fails(fake: str, testkit: Path) -> None:
    session = Session(testkit, Target(registry_url=fake))  # validated against the shipped schemas
    session.reports[("15817", "pif", "step")] = {"$patientid$": session.fresh_patient()}
    r = report.run_test(session, "11990")
    assert r.outcome == "failed" and "does not validate against its schema" in r.reason


@pytest.mark.parametrize(
    "fake", [registry_response([XdsError(v.XDSRegistryMetadataError, "wrong code")])], indirect=True
)
def test_wrong_error_code_fails(fake: str, testkit: Path) -> None:
    session = Session(testkit, Target(registry_url=fake))
    r = report.run_test(session, "11996")
    assert r.outcome == "failed" and "XDSUnknownPatientId" in r.reason


def test_missing_and_junit(testkit: Path, tmp_path: Path) -> None:
    from lxml import etree

    session = Session(testkit, Target())
    missing = report.run_test(session, "no-such-test-0000")
    na = report.run_test(session, "11990")  # no registry in the target: not applicable, named
    assert "the target has no registry" in na.reason
    assert missing.outcome == "missing" and na.outcome == "not applicable"
    xml = etree.fromstring(report.junit_xml({"x": [missing, na]}))
    suite = xml.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("skipped") == "2"
    assert "2 not applicable" in report.summary_line(
        [missing, na]
    ) or "1 not applicable" in report.summary_line([missing, na])


# --- a small kit of made-up tests, for what the NIST kit shows only in combination ---------------
def plan(*steps: str) -> str:
    return f"<TestPlan><Test>x</Test>{''.join(steps)}</TestPlan>"


def write_test(
    kit: Path, test_id: str, sections: dict[str, str], files: dict[str, bytes] | None = None
) -> None:
    folder = kit / "tests" / test_id
    for name, text in sections.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "testplan.xml").write_text(text)
    (folder / "index.idx").write_text("\n".join(sections))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)


QUERY_STEP = (
    '<TestStep id="q"><StoredQueryTransaction><XDSb/><MetadataFile>q.xml</MetadataFile>'
    "</StoredQueryTransaction></TestStep>"
)


@pytest.fixture
def small_kit(tmp_path: Path) -> Path:
    write_test(tmp_path, "dep", {"s": plan(QUERY_STEP)})
    write_test(
        tmp_path,
        "uses",
        {
            "s": plan(
                '<TestStep id="n"><NullTransaction><UseReport test="dep" section="s" step="q" '
                'reportName="r" useAs="$r$"/><Assertions><Assert>1 = 1</Assert></Assertions>'
                "</NullTransaction></TestStep>"
            )
        },
    )
    write_test(
        tmp_path,
        "lacking",
        {
            "s": plan(
                '<TestStep id="n"><NullTransaction><UseReport test="nowhere" section="s" step="q" '
                'reportName="r" useAs="$r$"/><Assertions><Assert>1 = 1</Assert></Assertions>'
                "</NullTransaction></TestStep>"
            )
        },
    )
    write_test(tmp_path, "empty", {"s": plan('<TestStep id="n"><NullTransaction/></TestStep>')})
    (tmp_path / "static.collections").mkdir()
    (tmp_path / "static.collections" / "some.tc").write_text("dep\nwithheld\n")
    return tmp_path


def test_a_step_needing_a_skipped_step_is_not_applicable_naming_it(small_kit: Path) -> None:
    session = Session(small_kit, Target())  # no registry: dep's query is not applicable
    r = report.run_test(session, "uses")
    assert r.outcome == "not applicable"
    assert "needs step dep/s/q, which was not applicable: the target has no registry" in r.reason


def test_a_dependency_the_kit_lacks_is_not_applicable_not_missing(small_kit: Path) -> None:
    r = report.run_test(Session(small_kit, Target()), "lacking")
    assert r.outcome == "not applicable" and "needs test nowhere, which the kit lacks" in r.reason


def test_a_step_with_nothing_to_judge_is_not_applicable(small_kit: Path) -> None:
    r = report.run_test(Session(small_kit, Target()), "empty")
    assert r.outcome == "not applicable" and "nothing to judge" in r.reason


def test_unknown_collection_and_test_id_are_errors(small_kit: Path) -> None:
    session = Session(small_kit, Target())
    with pytest.raises(ValueError, match="no collection 'xua'"):
        report.run_collection(session, "xua")
    with pytest.raises(LookupError):
        report.run_named_test(session, "no-such-test")
    listed = report.run_collection(session, "some")  # a listed, withheld test is missing
    assert [r.outcome for r in listed] == ["not applicable", "missing"]


def test_a_write_not_applicable_makes_the_steps_after_it_not_applicable(testkit: Path) -> None:
    # 12360 submits to a repository the target lacks: its query cannot find what was not stored
    session = Session(testkit, Target(registry_url="http://127.0.0.1:9/registry"))
    r = report.run_test(session, "12360")
    assert r.outcome == "not applicable"
    assert "follows step submit/submit" in r.reason


def test_tls_tests_need_tls(testkit: Path) -> None:
    r = report.run_test(Session(testkit, Target(registry_url="http://127.0.0.1:9/registry")), "12028")
    assert r.outcome == "not applicable" and "over TLS" in r.reason


def test_xua_tests_are_not_applicable_without_assertions(testkit: Path) -> None:
    r = report.run_test(Session(testkit, Target(registry_url="http://127.0.0.1:9/registry")), "11990_expired")
    assert r.outcome == "not applicable" and "'expired'" in r.reason


def test_testdir_resolves_as_the_toolkit_does(testkit: Path) -> None:
    from xds.conformance import testplan as tp

    test = tp.load_test(testkit, "12021")
    retrieve = test.section("retrieve").directory
    assert tp.resolve_testdir(retrieve, "submit", test.directory) == test.directory / "submit"
    assert tp.resolve_testdir(retrieve, "../query", test.directory) == test.directory / "query"
    assert tp.resolve_file(retrieve, "submit/my_document.txt", test.directory).is_file()
