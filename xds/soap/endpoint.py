"""An ASGI SOAP 1.2 endpoint that dispatches on ``wsa:Action`` (ITI TF-2 Appendix V).

It reads plain ``application/soap+xml`` and MTOM ``multipart/related`` requests as they stream in,
checks WS-Addressing (Action required, synchronous ReplyTo only), calls the handler registered for
the action and writes the answer: MTOM to MTOM, plain otherwise. Envelope problems become SOAP
faults, answered with the HTTP status SOAP 1.2 Part 2 §7.5.2.2 gives their code (400 for
env:Sender, 500 for the others), env:NotUnderstood / env:Upgrade header blocks for MustUnderstand
and VersionMismatch, and wsa:RelatesTo whenever the message's wsa:MessageID was read; a handler's
unexpected exception becomes a Receiver fault with no internals in it, and the endpoint keeps
serving.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from starlette.types import Message, Receive, Scope, Send

from xds.soap.envelope import (
    NS_WSSE,
    SOAP12_CONTENT_TYPE,
    WSA_ANONYMOUS,
    WSA_HEADERS,
    WSA_NONE,
    Attachment,
    SoapFault,
    SoapRequest,
    SoapResponse,
    all_not_understood,
    envelope_bytes,
    fault_bytes,
    parse_envelope,
)
from xds.soap.mtom import (
    MultipartParser,
    content_type_params,
    multipart_content_type,
    new_boundary,
    stream_mtom,
)

log = logging.getLogger("xds.soap")

Handler = Callable[[SoapRequest], Awaitable[SoapResponse]]
# seconds a request body may pause before the request is given up (slow or stalled clients)
READ_TIMEOUT = 60.0
# what an endpoint behind a security policy also processes (the policy reads wsse:Security)
_WITH_WSSE = WSA_HEADERS | {"{" + NS_WSSE + "}Security"}


class SecurityPolicy(Protocol):
    """What guards an endpoint (the trust model's policy enforcement point, ITI TF-2 §3.40 XUA).

    ``check`` runs after the envelope is parsed and before the handler; it may attach what it
    learnt to ``request.security`` and refuses a request by raising :class:`SoapFault`.
    ``secure_response`` may add headers (e.g. a WS-Security signature) to the answer's envelope,
    covering its MTOM ``attachments``; ``secure_fault`` likewise to a fault.
    """

    async def check(self, request: SoapRequest, scope: Scope) -> None: ...

    def secure_response(
        self, request: SoapRequest, envelope: bytes, attachments: Sequence[Attachment] = ()
    ) -> bytes: ...

    def secure_fault(self, request: SoapRequest | None, envelope: bytes) -> bytes: ...


# What a handler's unexpected exception is answered with (the transaction's own response carrying
# an error of its profile), or None for a Receiver fault.
FailureAnswer = Callable[[SoapRequest, Exception], SoapResponse | None]


class ExchangeObserver(Protocol):
    """Told of every exchange as its answer is about to leave (the audit trail, ITI TF-2a §3.20):
    the request, the response or the fault, and whether the fault was the security policy's
    refusal. It must not block and must not raise."""

    def exchanged(
        self,
        scope: Scope,
        request: SoapRequest,
        response: SoapResponse | None,
        fault: SoapFault | None,
        refused: bool,
    ) -> None: ...


class SoapEndpoint:
    """ASGI application serving the SOAP actions in ``handlers``."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        *,
        max_body_bytes: int = 64 * 1024 * 1024,
        max_attachment_bytes: int = 0,
        spool_threshold: int = 1024 * 1024,
        tmp_dir: str | None = None,
        security: SecurityPolicy | None = None,
        read_timeout: float = READ_TIMEOUT,
        failure: FailureAnswer | None = None,
    ) -> None:
        self.handlers = handlers
        self.failure = failure
        self.read_timeout = read_timeout
        self.security = security
        self.max_body_bytes = max_body_bytes
        # MTOM messages may carry attachments up to this size in all; the SOAP envelope itself
        # (and any plain message) stays within max_body_bytes.
        self.max_total_bytes = max_body_bytes + max_attachment_bytes
        self.spool_threshold = spool_threshold
        self.tmp_dir = tmp_dir
        self.observer: ExchangeObserver | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _plain(send, 405, b"SOAP endpoint: POST SOAP 1.2 messages here\n", [(b"allow", b"POST")])
            return
        request: SoapRequest | None = None
        attachments: dict[str, Attachment] = {}
        refused = False
        observed = False
        try:
            request = await self._read(scope, receive)
            attachments = request.attachments
            try:
                if self.security is not None:
                    refused = True
                    await self.security.check(request, scope)
                    refused = False
                response = await self._dispatch(request)
            except SoapFault:
                raise
            except Exception as exc:
                failed = self.failure(request, exc) if self.failure is not None else None
                if failed is None:
                    raise
                response = failed
            observed = self._observe(scope, request, response, None, False)
            await self._answer(send, request, response)
        except SoapFault as fault:
            if not observed:
                self._observe(scope, request, None, fault, refused)
            await _send_fault(
                send, fault, request.message_id if request else None, self._fault_security(request)
            )
        except Exception:
            log.exception("SOAP handler failed")
            fault = SoapFault("Receiver", "the service could not process the request")
            if not observed:
                self._observe(scope, request, None, fault, False)
            await _send_fault(
                send, fault, request.message_id if request else None, self._fault_security(request)
            )
        finally:
            for att in attachments.values():
                att.discard()

    def _fault_security(self, request: SoapRequest | None) -> Callable[[bytes], bytes] | None:
        if self.security is None:
            return None
        security = self.security
        return lambda envelope: security.secure_fault(request, envelope)

    def _observe(
        self,
        scope: Scope,
        request: SoapRequest | None,
        response: SoapResponse | None,
        fault: SoapFault | None,
        refused: bool,
    ) -> bool:
        """Tell the observer (the audit trail) before the answer leaves, so a client that has its
        answer knows the exchange is on record."""
        if self.observer is not None and request is not None:
            self.observer.exchanged(scope, request, response, fault, refused)
        return True

    # --- request ----------------------------------------------------------------------------------
    async def _read(self, scope: Scope, receive: Receive) -> SoapRequest:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "")
        length = headers.get("content-length")
        media, params = content_type_params(content_type) if content_type else ("", {})
        multipart = media.startswith("multipart/")
        limit = self.max_total_bytes if multipart else self.max_body_bytes
        if length and length.isascii() and length.isdigit() and int(length) > limit:
            raise SoapFault("Sender", f"the message is larger than the limit of {limit} bytes")
        attachments: dict[str, Attachment] = {}
        unstored: OSError | None = None
        if multipart:
            parser = MultipartParser(
                content_type,
                spool_threshold=self.spool_threshold,
                tmp_dir=self.tmp_dir,
                max_root_bytes=self.max_body_bytes,  # the envelope part, checked as it streams
            )
            try:
                await self._pump(receive, parser.feed, limit)
                data, attachments = parser.close()
                unstored = parser.unstored
            except BaseException:
                parser.discard()
                raise
        elif media in (SOAP12_CONTENT_TYPE, "application/xml", "text/xml", ""):
            chunks: list[bytes] = []
            await self._pump(receive, chunks.append, limit)
            data = b"".join(chunks)
        else:
            raise SoapFault("Sender", f"unsupported Content-Type {media!r}; use application/soap+xml or MTOM")
        try:
            request = parse_envelope(data, attachments, mtom=multipart, request=True)
            try:
                self._check_addressing(request, params.get("action"))
            except SoapFault as fault:  # answered in relation to the message read
                fault.message_id = request.message_id
                raise
            request.unstored = unstored
        except BaseException:  # the request is refused: its spooled parts go with it
            for att in attachments.values():
                att.discard()
            raise
        return request

    async def _pump(self, receive: Receive, sink: Callable[[bytes], None], limit: int) -> None:
        """Feed the body to ``sink`` as it arrives. Once part of it has come, a client that sends
        nothing more for ``read_timeout`` seconds is answered and let go instead of holding its
        connection. (The first part is awaited without a timer: most bodies arrive whole with
        their headers, and a timer per request costs more than the rest of reading it. A client
        that stalls before any body is held like one that stalls in its headers: that is a
        reverse proxy's to cut, see the README.)"""
        total = 0

        def take(message: Message) -> bool:
            nonlocal total
            if message["type"] == "http.disconnect":
                raise SoapFault("Sender", "the client went away before the message was complete")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise SoapFault("Sender", f"the message is larger than the limit of {limit} bytes")
            if chunk:
                sink(chunk)
            return not message.get("more_body", False)

        if take(await receive()):
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.read_timeout) as idle:
                while not take(await receive()):
                    idle.reschedule(loop.time() + self.read_timeout)
        except TimeoutError:
            raise SoapFault(
                "Sender", f"the message stopped arriving: nothing came for {self.read_timeout:g} s"
            ) from None

    def _check_addressing(self, request: SoapRequest, ct_action: str | None) -> None:
        """WS-Addressing 1.0 checks (Core §3, SOAP Binding §6), and no header block this endpoint
        must understand but does not (SOAP 1.2 Part 1 §5.4.8: MustUnderstand)."""
        understood = _WITH_WSSE if self.security is not None else WSA_HEADERS
        missed = all_not_understood(request.header, understood)
        if missed:
            raise SoapFault(
                "MustUnderstand",
                f"header block {', '.join(missed)} is not understood by this endpoint",
                not_understood=missed,
            )
        if not request.action:
            raise SoapFault("Sender", "wsa:Action header is required", "wsa:MessageAddressingHeaderRequired")
        if ct_action and ct_action != request.action:
            raise SoapFault(
                "Sender",
                f"Content-Type action {ct_action!r} contradicts wsa:Action {request.action!r}",
                "wsa:InvalidAddressingHeader",
            )
        if request.reply_to not in (None, WSA_ANONYMOUS, WSA_NONE):
            raise SoapFault(
                "Sender",
                "only synchronous exchanges are supported: wsa:ReplyTo must be anonymous",
                "wsa:InvalidAddressingHeader",
            )
        if request.action not in self.handlers:
            raise SoapFault(
                "Sender",
                f"the action {request.action!r} is not supported at this endpoint",
                "wsa:ActionNotSupported",
            )

    async def _dispatch(self, request: SoapRequest) -> SoapResponse:
        if request.unstored is not None:  # a part could not be spooled (a full disk)
            raise request.unstored
        return await self.handlers[request.action](request)

    # --- response ---------------------------------------------------------------------------------
    async def _answer(self, send: Send, request: SoapRequest, response: SoapResponse) -> None:
        try:
            await self._send_answer(send, request, response)
        finally:
            for att in response.attachments:
                if att.path and att.path.startswith(self.tmp_dir or "\0"):
                    att.discard()
                aclose = getattr(att.stream, "aclose", None)
                if aclose is not None:  # a relayed part lets go of where it came from
                    await aclose()

    async def _send_answer(self, send: Send, request: SoapRequest, response: SoapResponse) -> None:
        envelope = envelope_bytes(
            response.action,
            response.body,
            relates_to=request.message_id,
            extra_headers=response.extra_headers,
        )
        if self.security is not None:
            envelope = self.security.secure_response(request, envelope, response.attachments)
        if not (request.mtom or response.attachments):
            ctype = f'{SOAP12_CONTENT_TYPE}; charset=UTF-8; action="{response.action}"'
            await _plain(send, 200, envelope, content_type=ctype.encode())
            return
        boundary = new_boundary()
        root_id = f"root.message@{uuid.uuid4().hex}"
        ctype = multipart_content_type(boundary, root_id, response.action)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype.encode())]}
        )
        try:
            async for chunk in stream_mtom(
                envelope, response.attachments, boundary, root_id, response.action
            ):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as exc:  # a relayed part broke off: the answer cannot be completed
            # (the server closes the connection: the client sees a truncated message, never a
            # complete one with a part missing)
            log.warning("the answer broke off after it had started: %s", exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _plain(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_fault(
    send: Send, fault: SoapFault, relates_to: str | None, secure: Callable[[bytes], bytes] | None = None
) -> None:
    body = fault_bytes(fault, relates_to=relates_to)
    if secure is not None:
        try:
            body = secure(body)
        except Exception:  # a fault is still answered when it cannot be signed
            log.exception("the fault could not be signed")
    ctype = f'{SOAP12_CONTENT_TYPE}; charset=UTF-8; action="http://www.w3.org/2005/08/addressing/soap/fault"'
    await _plain(send, fault.http_status, body, content_type=ctype.encode())
