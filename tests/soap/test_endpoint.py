"""The ASGI SOAP endpoint on its own: how it treats clients that stall."""

from __future__ import annotations

import asyncio

from xds.metadata import vocabulary as v
from xds.soap.endpoint import SoapEndpoint
from xds.soap.envelope import SoapRequest, SoapResponse, build_request


async def _echo(request: SoapRequest) -> SoapResponse:
    return SoapResponse("urn:answer", b"<ok/>")


def _call(endpoint: SoapEndpoint, first: bytes, *, then_stall: bool) -> tuple[int, bytes]:
    sent: list[dict[str, object]] = []

    async def run() -> None:
        chunks = [first]

        async def receive() -> dict[str, object]:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": then_stall}
            await asyncio.Event().wait()  # a client that never sends the rest
            raise AssertionError("unreachable")

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "headers": [(b"content-type", b"application/soap+xml")],
        }
        await asyncio.wait_for(endpoint(scope, receive, send), 10)

    asyncio.run(run())
    status = int(sent[0]["status"])  # type: ignore[call-overload]
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    return status, body


def test_a_body_that_stops_arriving_is_given_up_and_answered() -> None:
    endpoint = SoapEndpoint({v.ACTION_REGISTER: _echo}, read_timeout=0.2)
    data, _ = build_request(v.ACTION_REGISTER, b"<x/>")
    status, body = _call(endpoint, data[:40], then_stall=True)
    assert status == 400 and b"stopped arriving" in body
    status, body = _call(endpoint, data, then_stall=False)  # a whole message is served as before
    assert status == 200 and b"<ok/>" in body
