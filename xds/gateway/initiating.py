"""The XCA Initiating Gateway: local ITI-18 / ITI-43 fanned out as ITI-38 / ITI-39.

ITI TF-2b §3.38.4.1.3 and §3.39.4.1.3 for the outgoing transactions, ITI TF-2a §3.18.4.1.3 and
§3.43.4.1.3 (XDS Affinity Domain Option) for what a local Document Consumer sees:

- a stored query goes to every community of the directory at once (or to the one its ``home``
  attribute names), each with its own time limit (``[[community]] timeout_s``); the answers are
  merged, every object keeping (or given) its community's homeCommunityId. A community that
  cannot be reached, answers late, faults or whose answer does not verify contributes an error
  located at its homeCommunityId — XDSUnavailableCommunity when it did not answer — and the
  others' results still arrive: PartialSuccess;
- a Get… query without ``home``: XDSMissingHomeCommunityId; a ``home`` not in the directory:
  XDSUnknownCommunity;
- a retrieve is split by HomeCommunityId, each part sent as ITI-39 to its community, the answers
  joined into one MTOM answer: a signed answer is read whole and verified before any of it is used
  (its documents spooled past :data:`SPOOL_THRESHOLD`), an unsigned one is relayed, its documents
  passed on to the consumer as they arrive (:mod:`xds.gateway.relay`). What one community may
  answer is bounded by ``[server] max_body_mb`` (the envelope) plus ``max_document_mb`` (all of it).

Every outgoing request carries the consumer's own XUA assertion and is signed by this gateway
(``[trust] sign_key`` / ``sign_cert``, WS-Security as in :mod:`xds.trust.wssecurity`); every answer
to a signed request must be signed by an institution that chains to the community's trust anchors
(``[[community]] ca_file``, else this deployment's anchors) and relate to our request — documents
included, as WS-Security signs MTOM parts — or its content is not used.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from anyio import to_thread
from lxml import etree

from xds import safexml
from xds.config import CommunityConfig
from xds.gateway import messages as m
from xds.gateway import wire
from xds.gateway.relay import AnswerReader, AnswerTooLarge
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.registry_response import response_status
from xds.soap.endpoint import SoapEndpoint
from xds.soap.envelope import (
    Attachment,
    SoapFault,
    SoapRequest,
    SoapResponse,
    envelope_bytes,
    new_message_id,
    parse_envelope,
)
from xds.soap.mtom import normalize_cid
from xds.trust.assertion import NS_SAML, AssertionRejected
from xds.trust.wssecurity import NS_WSSE, MessageSigner, verify_answer

log = logging.getLogger("xds.gateway")

_ENV = "{" + v.NS_SOAP12 + "}"
_XOP_INCLUDE = "{" + v.NS_XOP + "}Include"
# documents of an ITI-39 answer up to this size are relayed from memory, larger ones spooled to disk
# (writing and re-reading a 10 MB document cost more than both network legs of a gateway together)
SPOOL_THRESHOLD = 16 * 1024 * 1024
# what a community's refusal (a SOAP fault) or an answer that does not verify is reported as
_FAILURE = {v.ACTION_XCA_QUERY: v.XDSRegistryError, v.ACTION_XCA_RETRIEVE: v.XDSRepositoryError}


@dataclass(frozen=True)
class Identity:
    """This gateway's signing key and certificate (PEM files; also its TLS client identity)."""

    cert_path: str
    key_path: str

    def pems(self) -> tuple[bytes, bytes]:
        return Path(self.key_path).read_bytes(), Path(self.cert_path).read_bytes()


class ExchangeAudit(Protocol):
    """Told of every ITI-38 / ITI-39 exchange this gateway asked, once its outcome is known (the
    audit trail's requesting side, :class:`xds.gateway.audit.RequestAudit`); must not raise."""

    def requested(
        self,
        action: str,
        request: etree._Element,
        response: etree._Element | bytes | None,
        url: str,
        fault: str,
        security: object | None,
    ) -> None: ...


class CommunityError(Exception):
    """One community's part of a request failed; ``error`` says how (located at the community)."""

    def __init__(self, error: XdsError) -> None:
        super().__init__(error.context)
        self.error = error


@dataclass
class _Answer:
    message: SoapRequest
    attachments: dict[str, Attachment] = field(default_factory=dict)
    reader: AnswerReader | None = None  # an unsigned MTOM answer whose parts are still to come


class InitiatingGateway:
    """ITI-18 and ITI-43 for local consumers, answered by the communities of the directory."""

    def __init__(
        self,
        communities: Sequence[CommunityConfig],
        *,
        identity: Identity | None = None,
        anchors: Sequence[str] = (),
        spool_dir: str | Path,
    ) -> None:
        self.communities = {c.home_community_id: c for c in communities}
        self.identity = identity
        # the key is read once: loading an RSA key checks it (~30 ms), which per outgoing request
        # was most of a signed fan-out's time on the event loop
        self._signer = MessageSigner(*identity.pems()) if identity else None
        self.anchors = list(anchors)
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        self._wire = wire.WirePool()  # relayed answers (xds.gateway.wire)
        self.audit: ExchangeAudit | None = None  # the app hands it the audit trail's side
        self._default_tls: ssl.SSLContext | None = None
        self.max_answer_bytes = 64 * 2**20  # an answer envelope; endpoints() sets [server] max_body_mb
        self.max_document_bytes = 16384 * 2**20  # its documents; endpoints() sets [server] max_document_mb

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self._wire.close()

    # --- ITI-18 → ITI-38 ----------------------------------------------------------------------------
    async def stored_query(self, request: SoapRequest) -> SoapResponse:
        """ITI-18 from a local consumer, answered by the communities (ITI TF-2a §3.18.4.1.3)."""
        adhoc = m.adhoc_query(request.body)
        if adhoc is None:
            raise SoapFault("Sender", f"expected AdhocQueryRequest, got {request.body.tag}")
        home = (adhoc.get("home") or "").strip()
        if home and home not in self.communities:
            error = XdsError(
                v.XDSUnknownCommunity, f"community {home} is not in this gateway's directory", home
            )
            return SoapResponse(v.ACTION_STORED_QUERY_RESPONSE, m.query_response([error]))
        if not home and adhoc.get("id") in m.QUERIES_NEEDING_HOME:
            name = v.STORED_QUERY_NAMES.get(adhoc.get("id", ""), "this query")
            error = XdsError(
                v.XDSMissingHomeCommunityId,
                f"{name} has no patient id: the AdhocQuery must name the community (home attribute)",
            )
            return SoapResponse(v.ACTION_STORED_QUERY_RESPONSE, m.query_response([error]))
        targets = [self.communities[home]] if home else list(self.communities.values())
        assertion = consumer_assertion(request)
        answers = await asyncio.gather(
            *(self._query_one(c, request.body, assertion, request.security) for c in targets)
        )
        objects: list[etree._Element] = []
        errors: list[XdsError] = []
        answered = False
        for community, answer in zip(targets, answers, strict=True):
            errors += m.located(answer.errors, community.home_community_id)
            answered = answered or answer.status != v.RESPONSE_FAILURE
            for obj in answer.objects:
                if not obj.get("home"):
                    obj.set("home", community.home_community_id)
                objects.append(obj)
        status = response_status(errors, partial=answered)
        return SoapResponse(v.ACTION_STORED_QUERY_RESPONSE, m.query_response(errors, objects, status=status))

    async def _query_one(
        self,
        community: CommunityConfig,
        body: etree._Element,
        assertion: etree._Element | None,
        security: object | None = None,
    ) -> m.QueryAnswer:
        outgoing = copy.deepcopy(body)
        outgoing.find(m.RIM + "AdhocQuery").set("home", community.home_community_id)  # type: ignore[union-attr]
        url, action = community.registry_url, v.ACTION_XCA_QUERY
        try:
            answer = await self._exchange(community, url, action, etree.tostring(outgoing), assertion)
            found = m.read_query_response(answer.message.body)
        except CommunityError as exc:
            self._audit(action, outgoing, None, url, exc.error.context, security)
            return m.QueryAnswer(v.RESPONSE_FAILURE, [exc.error], [])
        except ValueError as exc:
            error = XdsError(v.XDSRegistryError, f"{_name(community)} answered out of turn: {exc}")
            self._audit(action, outgoing, None, url, error.context, security)
            return m.QueryAnswer(v.RESPONSE_FAILURE, [error], [])
        self._audit(action, outgoing, answer.message.body, url, "", security)
        return found

    def _audit(
        self,
        action: str,
        request: etree._Element,
        response: etree._Element | None,
        url: str,
        fault: str,
        security: object | None,
    ) -> None:
        if self.audit is not None:
            self.audit.requested(action, request, response, url, fault, security)

    # --- ITI-43 → ITI-39 ----------------------------------------------------------------------------
    async def retrieve(self, request: SoapRequest) -> SoapResponse:
        """ITI-43 from a local consumer, split by HomeCommunityId (ITI TF-2a §3.43.4.1.3)."""
        wanted = m.requested_documents(request.body)
        errors: list[XdsError] = []
        by_community: dict[str, list[m.DocumentRequest]] = {}
        for req in wanted:
            if not req.home:
                context = f"the request for document {req.unique_id} names no HomeCommunityId"
                errors.append(XdsError(v.XDSMissingHomeCommunityId, context, req.unique_id))
            elif req.home not in self.communities:
                context = f"community {req.home} is not in this gateway's directory"
                errors.append(XdsError(v.XDSUnknownCommunity, context, req.home))
            else:
                by_community.setdefault(req.home, []).append(req)
        assertion = consumer_assertion(request)
        # an answer to an unverified consumer is not signed, so nothing of it waits for the end
        relay = request.security is None
        parts = await asyncio.gather(
            *(
                self._retrieve_one(self.communities[h], reqs, assertion, relay, request.security)
                for h, reqs in by_community.items()
            )
        )
        documents: list[bytes] = []
        attachments: list[Attachment] = []
        for part_errors, part_documents, part_attachments in parts:
            errors += part_errors
            documents += part_documents
            attachments += part_attachments
        return SoapResponse(
            v.ACTION_RETRIEVE_RESPONSE, m.retrieve_response(errors, documents), attachments=attachments
        )

    async def _retrieve_one(
        self,
        community: CommunityConfig,
        reqs: list[m.DocumentRequest],
        assertion: etree._Element | None,
        relay: bool = False,
        security: object | None = None,
    ) -> tuple[list[XdsError], list[bytes], list[Attachment]]:
        url, action, outgoing = community.repository_url, v.ACTION_XCA_RETRIEVE, m.retrieve_request(reqs)
        asked = safexml.parse(outgoing)
        try:
            # an honest answer has a part per document asked for, the envelope and perhaps a
            # certificate or two (MTOM-optimised tokens); more parts are not held for it
            parts = len(reqs) + 4
            answer = await self._exchange(
                community, url, action, outgoing, assertion, relay=relay, parts=parts
            )
        except CommunityError as exc:
            self._audit(action, asked, None, url, exc.error.context, security)
            return [exc.error], [], []
        keep: list[Attachment] = []
        try:
            _, errors = m.read_registry_response(answer.message.body)
            documents = []
            for doc in answer.message.body.iter(m.XDSB + "DocumentResponse"):
                include = doc.find(f"{m.XDSB}Document/{_XOP_INCLUDE}")
                if include is not None:
                    att = self._document_part(answer, normalize_cid(include.get("href", "")))
                    include.set("href", f"cid:{att.content_id}")
                    keep.append(att)
                documents.append(etree.tostring(doc))
        except ValueError as exc:
            for att in keep:
                att.discard()
            if answer.reader is not None:
                await answer.reader.aclose()
            error = XdsError(v.XDSRepositoryError, f"{_name(community)} answered out of turn: {exc}")
            self._audit(action, asked, None, url, error.context, security)
            return [m.located([error], community.home_community_id)[0]], [], []
        finally:
            for unused in answer.attachments.values():
                unused.discard()
        if answer.reader is not None and not keep:
            await answer.reader.aclose()
        self._audit(action, asked, answer.message.body, url, "", security)
        return m.located(errors, community.home_community_id), documents, keep

    @staticmethod
    def _document_part(answer: _Answer, content_id: str) -> Attachment:
        """The part a DocumentResponse refers to, under a Content-ID of this gateway's answer."""
        ours = f"doc.{uuid.uuid4().hex}@xds-gateway"
        if answer.reader is not None:
            if content_id in answer.reader.handed_out:
                raise ValueError("two DocumentResponses refer to one part")
            return Attachment(ours, stream=answer.reader.stream(content_id))
        att = answer.attachments.pop(content_id, None)
        if att is None:
            raise ValueError("a DocumentResponse refers to a part the answer does not hold")
        att.content_id = ours
        return att

    # --- one exchange -------------------------------------------------------------------------------
    async def _exchange(
        self,
        community: CommunityConfig,
        url: str,
        action: str,
        body: bytes,
        assertion: etree._Element | None,
        *,
        relay: bool = False,
        parts: int = 0,
    ) -> _Answer:
        """Send one ITI-38/39 request, signed, within the community's time limit; the verified answer
        (``relay``: an unsigned MTOM answer's parts are left to be read as they are passed on)."""
        here = community.home_community_id
        if not url:
            raise CommunityError(
                XdsError(v.XDSUnavailableCommunity, f"{_name(community)} has no {action} endpoint", here)
            )
        started = time.monotonic()
        try:
            async with asyncio.timeout(community.timeout_s):
                return await self._send(community, url, action, body, assertion, relay, parts)
        except TimeoutError:
            context = f"{_name(community)} did not answer within {community.timeout_s:g} s"
            raise CommunityError(XdsError(v.XDSUnavailableCommunity, context, here)) from None
        except httpx.HTTPError as exc:
            context = f"{_name(community)} could not be reached: {type(exc).__name__} {exc}".strip()
            raise CommunityError(XdsError(v.XDSUnavailableCommunity, context, here)) from None
        except SoapFault as fault:
            subcode = f" ({fault.subcode})" if fault.subcode else ""
            context = f"{_name(community)} refused the request: {fault.reason}{subcode}"
            raise CommunityError(XdsError(_FAILURE[action], context, here)) from None
        except AnswerTooLarge as exc:
            context = f"the answer of {_name(community)} was not accepted: {exc}"
            raise CommunityError(XdsError(_FAILURE[action], context, here)) from None
        except AssertionRejected as exc:
            context = f"the answer of {_name(community)} was not accepted: {exc.reason}"
            raise CommunityError(XdsError(_FAILURE[action], context, here)) from None
        finally:
            log.debug("%s %s: %.0f ms", _name(community), action, (time.monotonic() - started) * 1000)

    async def _send(
        self,
        community: CommunityConfig,
        url: str,
        action: str,
        body: bytes,
        assertion: etree._Element | None,
        relay: bool,
        parts: int = 0,
    ) -> _Answer:
        message_id = new_message_id()
        envelope = envelope_bytes(action, body, message_id=message_id, to=url, reply_to_anonymous=True)
        signed = self._signer is not None and assertion is not None
        if signed:
            # this gateway's signature over this request alone (its own MessageID, To, Timestamp)
            signer = copy.copy(self._signer)
            signer.assertion = assertion
            envelope = await to_thread.run_sync(signer.secure, envelope)
        headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
        relayed = relay and not signed  # an unsigned answer to an unsigned consumer
        response: httpx.Response | wire.WireResponse
        if relayed and wire.usable(url):  # passed on as it comes: the lean client
            response = await self._wire.post(url, envelope, headers, self._tls(community))
        else:
            client = self._client(community)
            # every wait for more of the answer is bounded by the community's time limit (as a
            # relayed answer is read after _exchange's overall limit)
            timeout = httpx.Timeout(None, read=community.timeout_s)
            request = client.build_request("POST", url, content=envelope, headers=headers, timeout=timeout)
            response = await client.send(request, stream=True)
        try:
            answer = await self._read(response, community, relayed, parts)
        except BaseException:
            await response.aclose()
            raise
        if answer.reader is None:
            await response.aclose()
        if signed:
            anchors = [community.ca_file] if community.ca_file else self.anchors
            try:
                await to_thread.run_sync(
                    lambda: verify_answer(
                        answer.message.envelope,
                        anchors=anchors,
                        relates_to=message_id,
                        parts=answer.attachments,
                    )
                )
            except AssertionRejected:
                for att in answer.attachments.values():
                    att.discard()
                raise
        return answer

    async def _read(
        self,
        response: httpx.Response | wire.WireResponse,
        community: CommunityConfig,
        relay: bool,
        parts: int = 0,
    ) -> _Answer:
        ctype = response.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/"):
            limit = self.max_answer_bytes
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:  # read no further: the envelope is not held in memory
                    raise AnswerTooLarge(
                        f"the answer is larger than {limit // 2**20} MB ([server] max_body_mb)"
                    )
            return _Answer(parse_envelope(bytes(body)))
        reader = AnswerReader(
            response,
            limit=self.max_answer_bytes + self.max_document_bytes,
            max_root=self.max_answer_bytes,
            spool_dir=str(self.spool_dir),
            spool_threshold=SPOOL_THRESHOLD,
            relay=relay,
            idle_timeout=community.timeout_s,
            max_parts=parts,
        )
        try:
            root = await reader.root()
            if relay:
                return _Answer(parse_envelope(root, mtom=True), reader=reader)
            attachments = await reader.read_all()
            return _Answer(parse_envelope(root, attachments, mtom=True), attachments)
        except BaseException:
            reader.parser.discard()
            raise

    def _client(self, community: CommunityConfig) -> httpx.AsyncClient:
        client = self._clients.get(community.home_community_id)
        if client is None:
            client = httpx.AsyncClient(timeout=None, verify=self._tls(community))
            self._clients[community.home_community_id] = client
        return client

    def _tls(self, community: CommunityConfig) -> ssl.SSLContext:
        """The TLS context for ``community``: its ``ca_file`` and this gateway's certificate, or the
        system's trust store."""
        context = self._tls_contexts.get(community.home_community_id)
        if context is None:
            if self._default_tls is None:  # (loading the CA bundle takes ~20 ms: once, not per community)
                self._default_tls = httpx.create_ssl_context()
            context = self._default_tls
            if community.ca_file:
                context = ssl.create_default_context(cafile=community.ca_file)
                if self.identity is not None:
                    context.load_cert_chain(self.identity.cert_path, self.identity.key_path)
            self._tls_contexts[community.home_community_id] = context
        return context

    def endpoints(
        self, max_body_bytes: int, read_timeout: float = 60.0, max_document_bytes: int | None = None
    ) -> tuple[SoapEndpoint, SoapEndpoint]:
        """The two SOAP endpoints: ITI-18 (``/ig/registry``) and ITI-43 (``/ig/repository``); a
        community's answer envelope may be as large as a request to them, its documents together
        ``max_document_bytes`` more."""
        self.max_answer_bytes = max_body_bytes
        if max_document_bytes is not None:
            self.max_document_bytes = max_document_bytes
        query = SoapEndpoint(
            {v.ACTION_STORED_QUERY: self.stored_query},
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
        )
        retrieve = SoapEndpoint(
            {v.ACTION_RETRIEVE: self.retrieve},
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            tmp_dir=str(self.spool_dir),
        )
        return query, retrieve


def consumer_assertion(request: SoapRequest) -> etree._Element | None:
    """The XUA assertion of a verified request (the one the trust model checked), or None."""
    if request.security is None or request.header is None:
        return None
    security = request.header.find("{" + NS_WSSE + "}Security")
    return security.find("{" + NS_SAML + "}Assertion") if security is not None else None


def _name(community: CommunityConfig) -> str:
    return f"community {community.name or community.home_community_id}"
