"""The policy enforcement point in front of a SOAP endpoint (ITI TF-2 §3.40.4.2 X-Service Provider).

Per endpoint the trust model is ``off``, ``optional`` (a Security header, when present, must be
valid) or ``required``. A valid request has a verified XUA assertion and institution signature
(``xds.trust.wssecurity``); the handler then sees only the signed Body, Action and MessageID.
The signed wsa:To must be this endpoint's public address (``[server] public_url`` + path), so a
message signed for another deployment is refused. Each signed message (its signed MessageID) is
remembered by a :class:`ReplayStore` (the deployment's database) until its Timestamp expires plus
the clock skew — as long as verification would accept it — so a replay is refused by every worker
process; one assertion may serve many messages in its lifetime. With ``bind_tls`` the TLS client
certificate must be the message signer's. What the verified requester may read or write is decided
by the actors on the data itself, after selection (``xds.trust.policy``, ``xds.registry.access``).

Refusals are SOAP 1.2 Sender faults with a WS-Security subcode (wsse:InvalidSecurity,
wsse:FailedCheck, wsse:FailedAuthentication, wsse:MessageExpired) and a reason in plain words.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from anyio import to_thread
from cryptography import x509
from starlette.types import Scope

from xds.soap.envelope import Attachment, SoapFault, SoapRequest
from xds.soap.mtom import normalize_cid
from xds.trust.assertion import AssertionRejected
from xds.trust.wssecurity import (
    NS_WSSE,
    REQUEST_ASSERTION,
    MessageSigner,
    SecurityContext,
    TrustRoles,
    verify_request,
)
from xds.trust.xmldsig import SignatureInvalid

log = logging.getLogger("xds.trust")


class ReplayStore(Protocol):
    """Where identifiers already used are remembered (the deployment's database, every worker)."""

    def first_time(self, identifier: str, expires: dt.datetime) -> bool: ...


class PolicyEnforcementPoint:
    """A :class:`xds.soap.endpoint.SecurityPolicy` for one endpoint."""

    def __init__(
        self,
        *,
        mode: str,
        trust: TrustRoles,
        replay: ReplayStore,
        public_url: str = "",
        bind_tls: bool = False,
        host_audience: bool = False,
        signing: tuple[bytes, bytes] | None = None,
    ) -> None:
        if mode not in ("off", "optional", "required"):
            raise ValueError(f"trust mode {mode!r}: choose off, optional or required")
        if mode != "off":
            files = trust.institutions.files
            if not files or not all(Path(f).is_file() for f in files):
                raise ValueError(
                    f"trust mode {mode} needs trust anchors (ca_file); {files!r} are not all files"
                )
            if not trust.issuers:
                raise ValueError(f"trust mode {mode} needs at least one [[trust.issuer]] (name, cert)")
        self.mode = mode
        self.trust = trust
        self.public_url = public_url.rstrip("/")
        self.bind_tls = bind_tls
        self.host_audience = host_audience  # no audience configured: also the address the Host names
        self.replay = replay
        self.signer = MessageSigner(*signing) if signing is not None else None

    async def check(self, request: SoapRequest, scope: Scope) -> None:
        if self.mode == "off":
            return
        header = request.header
        has_security = header is not None and header.find(f"{{{NS_WSSE}}}Security") is not None
        if not has_security:
            if self.mode == "required":
                raise SoapFault(
                    "Sender",
                    "this endpoint requires a signed XUA assertion in a WS-Security header",
                    "wsse:InvalidSecurity",
                )
            return
        try:
            # one hop to a worker thread for the whole check (each hop waits for a thread to run)
            ctx = await to_thread.run_sync(self._verify_and_record, request, scope)
        except AssertionRejected as exc:
            log.info("request refused: %s", exc.reason)
            raise SoapFault("Sender", exc.reason, exc.subcode) from None
        except SignatureInvalid as exc:  # any signature problem not named more precisely on the way
            raise SoapFault("Sender", f"a signature is not valid: {exc}", "wsse:FailedCheck") from None
        request.security = ctx
        REQUEST_ASSERTION.set(ctx.token)
        request.body = ctx.payload
        request.message_id = ctx.message_id

    def _verify_and_record(self, request: SoapRequest, scope: Scope) -> SecurityContext:
        """Verify, check action, address and TLS binding, then record the message (replay)."""
        ctx = self._verify(request, scope)
        if ctx.action != request.action:
            raise SoapFault("Sender", "wsa:Action is not the one that was signed", "wsse:FailedCheck")
        self._check_address(ctx, scope)
        if self.bind_tls:
            _check_tls_binding(ctx, scope)
        if not self.replay.first_time(ctx.replay_key, ctx.expires + self.trust.clock_skew):
            raise SoapFault(
                "Sender", "replayed request (this signed message was seen before)", "wsse:FailedCheck"
            )
        return ctx

    def _verify(self, request: SoapRequest, scope: Scope) -> SecurityContext:
        trust = self.trust
        if self.host_audience:
            seen = _seen_address(scope)
            base = seen[: len(seen) - len(scope.get("path", ""))] if scope.get("path") else seen
            trust = dataclasses.replace(trust, audiences=(*trust.audiences, base))
        return verify_request(
            request.envelope,
            trust=trust,
            parts=request.attachments,
            connection_certificates=_tls_client_chain(scope),
        )

    def _check_address(self, ctx: SecurityContext, scope: Scope) -> None:
        """The signed wsa:To is this endpoint's public address (``[server] public_url`` + path)."""
        expected = self.public_url + scope.get("path", "") if self.public_url else _seen_address(scope)
        if ctx.to is None:
            raise SoapFault(
                "Sender", f"the message names no wsa:To (this endpoint is {expected})", "wsse:FailedCheck"
            )
        if ctx.to.rstrip("/") != expected.rstrip("/"):
            raise SoapFault(
                "Sender",
                f"the message is addressed to {ctx.to}, this endpoint is {expected}",
                "wsse:FailedCheck",
            )

    def secure_response(
        self, request: SoapRequest, envelope: bytes, attachments: Sequence[Attachment] = ()
    ) -> bytes:
        """Signed by the responding institution (when configured), the MTOM parts of the answer
        under the signature."""
        if self.signer is not None and isinstance(request.security, SecurityContext):
            parts = {normalize_cid(a.content_id): a for a in attachments}
            envelope = self.signer.secure(envelope, parts=parts)
        return envelope

    def secure_fault(self, request: SoapRequest | None, envelope: bytes) -> bytes:
        """A fault to a request that came with a Security header is signed like an answer would be."""
        header = request.header if request is not None else None
        if self.signer is None or header is None or header.find(f"{{{NS_WSSE}}}Security") is None:
            return envelope
        return self.signer.secure(envelope)


def _seen_address(scope: Scope) -> str:
    """The address the request was sent to, as its Host header says (without ``[server] public_url``)."""
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


def _tls_client_chain(scope: Scope) -> list[x509.Certificate]:
    """The certificates the TLS client presented on this connection (uvicorn's ASGI TLS extension)."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = []
    for pem in tls.get("client_cert_chain") or []:
        try:
            chain.append(x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem))
        except ValueError:
            break
    return chain


def _check_tls_binding(ctx: SecurityContext, scope: Scope) -> None:
    """``bind_tls``: the TLS client certificate of the connection is the message signer's."""
    chain = _tls_client_chain(scope)
    if not chain:
        raise SoapFault(
            "Sender", "bind_tls: the connection presented no TLS client certificate", "wsse:FailedCheck"
        )
    if chain[0] != ctx.signer:
        raise SoapFault(
            "Sender", "bind_tls: the TLS client certificate is not the message signer's", "wsse:FailedCheck"
        )
