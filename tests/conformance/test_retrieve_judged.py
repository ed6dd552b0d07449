"""Retrieve steps are judged on the documents: a repository that answers wrongly fails the test.

A real deployment serves the replay; between the runner and its repository sits a proxy that
passes everything through except retrieve answers, which it re-encodes (documents inline, base64)
and, per test, spoils: other bytes, another mimeType, a document left out, an answer the schema
refuses. The untouched re-encoding passes, so each failure is the spoiling's.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import free_port, new_database

from xds.conformance import report
from xds.conformance.deployment import local_deployment
from xds.conformance.runner import Session, Target
from xds.metadata import vocabulary as v
from xds.soap.envelope import envelope_bytes
from xds.soap.mtom import inline_or_xop_bytes, parse_message

X = "{" + v.NS_XDSB + "}"


def spoil(answer: httpx.Response, mode: str) -> bytes:
    """The retrieve answer re-encoded without MTOM, spoiled as ``mode`` says."""
    message = parse_message(answer.headers["content-type"], answer.content)
    body = message.body
    responses = list(body.iter(X + "DocumentResponse"))
    for response in responses:
        document = response.find(X + "Document")
        data = inline_or_xop_bytes(document, message.attachments).read()
        for child in list(document):
            document.remove(child)
        if mode == "bytes":
            data = data[:-1] + bytes([data[-1] ^ 1])
        document.text = base64.b64encode(data).decode()
        if mode == "mime":
            response.find(X + "mimeType").text = "application/octet-stream"
    if mode == "missing":
        body.remove(responses[-1])
    if mode == "invalid":
        etree.SubElement(responses[0], X + "Comment").text = "not in the schema"
    return envelope_bytes(v.ACTION_RETRIEVE_RESPONSE, body)


def proxy_app(upstream: str, mode: dict[str, str]) -> Starlette:
    async def forward(request: Request) -> Response:
        data = await request.body()
        headers = {"content-type": request.headers["content-type"]}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(upstream, content=data, headers=headers)
        if b"RetrieveDocumentSetRequest" in data and mode["spoil"]:
            return Response(spoil(answer, mode["spoil"]), media_type="application/soap+xml")
        return Response(answer.content, media_type=answer.headers["content-type"])

    return Starlette(routes=[Route("/repository", forward, methods=["POST"])])


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory, testkit: Path) -> Iterator:
    tmp = tmp_path_factory.mktemp("retrieve")
    mode = {"spoil": ""}
    with new_database(tmp) as url, local_deployment(url, str(tmp / "data")) as target:
        assert target.repository_url is not None
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                proxy_app(target.repository_url, mode), host="127.0.0.1", port=port, log_level="warning"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        proxied = Target(target.registry_url, target.feed, f"http://127.0.0.1:{port}/repository")

        def run(test_id: str, how: str) -> report.TestReport:
            mode["spoil"] = how
            return report.run_test(Session(testkit, proxied), test_id)

        yield run
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("test_id", ["12360", "12021", "12029"])
def test_untouched_answers_pass(replay, test_id: str) -> None:  # type: ignore[no-untyped-def]
    r = replay(test_id, "none")
    assert r.outcome == "passed", r.reason


def test_wrong_bytes_fail(replay) -> None:  # type: ignore[no-untyped-def]
    r = replay("12360", "bytes")
    assert r.outcome == "failed"
    assert "bytes (SHA-1" in r.reason and "hash" in r.reason  # the file and the registry's hash


def test_wrong_mime_type_fails(replay) -> None:  # type: ignore[no-untyped-def]
    r = replay("12360", "mime")  # "Returned mimeType matches submission" (text/goofy)
    assert r.outcome == "failed"
    assert "submitted as 'text/goofy'" in r.reason


def test_missing_document_fails(replay) -> None:  # type: ignore[no-untyped-def]
    r = replay("12021", "missing")
    assert r.outcome == "failed" and "was not returned" in r.reason


def test_schema_invalid_answer_fails(replay) -> None:  # type: ignore[no-untyped-def]
    r = replay("12021", "invalid")
    assert r.outcome == "failed" and "does not validate against its schema" in r.reason


def test_the_submitted_bytes_decide_when_the_kit_names_another_file(replay) -> None:  # type: ignore[no-untyped-def]
    # 12029 submits readme.txt and names my_document.pdf as the reference: the bytes sent decide
    r = replay("12029", "bytes")
    assert r.outcome == "failed" and "bytes (SHA-1" in r.reason
    passed = replay("12029", "none")
    (retrieve,) = [s for s in passed.steps if s.section == "retrieve"]
    assert retrieve.outcome == "passed" and "readme.txt" in retrieve.reason
