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
    assert missing.outcome == "missing" and na.outcome == "not applicable"
    xml = etree.fromstring(report.junit_xml({"x": [missing, na]}))
    suite = xml.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("skipped") == "2"
    assert "2 not applicable" in report.summary_line(
        [missing, na]
    ) or "1 not applicable" in report.summary_line([missing, na])
