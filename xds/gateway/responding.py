"""The XCA Responding Gateway: ITI-38 and ITI-39 answered by this community.

ITI TF-2b §3.38.4.1.3 / §3.39.4.1.3 (expected actions). A Cross Gateway Query is the Registry
Stored Query of ITI-18 run by this community's registry — the same handler, so the trust model's
checks and access policy apply exactly as they do to ITI-18 — and every returned object carries
this community's homeCommunityId (the registry sets it). A Cross Gateway Retrieve is split by
repositoryUniqueId and each part handed to that repository's ITI-43 handler; the answers are joined.

Errors, as the profile assigns them:

- a ``home`` (ITI-38) or ``HomeCommunityId`` (ITI-39) that is not this community: XDSUnknownCommunity;
- none where one is required — a query without a patient id parameter, every DocumentRequest:
  XDSMissingHomeCommunityId;
- a repository this community does not serve: XDSUnknownRepositoryId.

With ``documents_only`` (Norway's national rule) associations, folders and submission sets are
not returned: queries only about them answer an empty Success, and other answers keep only
DocumentEntries.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from lxml import etree

from xds import safexml
from xds.gateway import messages as m
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.soap.endpoint import SoapEndpoint
from xds.soap.envelope import SoapRequest, SoapResponse

Handler = Callable[[SoapRequest], Awaitable[SoapResponse]]


class RespondingGateway:
    """ITI-38 / ITI-39 for one community, answered by its registry and repositories in process."""

    def __init__(
        self,
        home_community_id: str,
        query: Handler,
        repositories: Mapping[str, Handler],
        *,
        documents_only: bool = False,
    ) -> None:
        if not home_community_id.startswith("urn:oid:"):
            raise ValueError("a responding gateway needs [registry] home_community_id = 'urn:oid:…'")
        self.home = home_community_id
        self.query = query
        self.repositories = dict(repositories)
        self.documents_only = documents_only

    # --- ITI-38 -------------------------------------------------------------------------------------
    async def cross_gateway_query(self, request: SoapRequest) -> SoapResponse:
        """ITI-38 Cross Gateway Query (ITI TF-2b §3.38.4.1.3)."""
        adhoc = m.adhoc_query(request.body)
        if adhoc is not None:
            refused = self._community_error(adhoc)
            if refused is not None:
                return SoapResponse(v.ACTION_XCA_QUERY_RESPONSE, m.query_response([refused]))
            if self.documents_only and adhoc.get("id") in m.QUERIES_WITHOUT_DOCUMENTS:
                return SoapResponse(v.ACTION_XCA_QUERY_RESPONSE, m.query_response([]))
        if not self.documents_only or adhoc is None:
            answer = await self.query(dataclasses.replace(request, action=v.ACTION_STORED_QUERY))
            return SoapResponse(v.ACTION_XCA_QUERY_RESPONSE, answer.body)
        return SoapResponse(v.ACTION_XCA_QUERY_RESPONSE, await self._documents_only(request))

    def _community_error(self, adhoc: etree._Element) -> XdsError | None:
        home = (adhoc.get("home") or "").strip()
        if home and home != self.home:
            return XdsError(v.XDSUnknownCommunity, f"this is community {self.home}, not {home}", home)
        if not home and adhoc.get("id") in m.QUERIES_NEEDING_HOME:
            name = v.STORED_QUERY_NAMES.get(adhoc.get("id", ""), "this query")
            return XdsError(
                v.XDSMissingHomeCommunityId,
                f"{name} has no patient id: the AdhocQuery must name the community (home attribute)",
            )
        return None

    async def _documents_only(self, request: SoapRequest) -> bytes:
        """The answer with DocumentEntries only; an ObjectRef query is asked as LeafClass to tell them."""
        body = copy.deepcopy(request.body)
        object_refs = m.return_type(body) == v.RETURN_OBJECT_REF
        if object_refs:
            body.find(m.QUERY + "ResponseOption").set("returnType", v.RETURN_LEAF_CLASS)  # type: ignore[union-attr]
        inner = dataclasses.replace(request, action=v.ACTION_STORED_QUERY, body=body)
        answer = await self.query(inner)
        root = answer.body if isinstance(answer.body, etree._Element) else safexml.parse(answer.body)
        got = m.read_query_response(root)
        documents = [o for o in got.objects if o.tag == m.RIM + "ExtrinsicObject"]
        if object_refs:
            documents = [
                etree.Element(m.RIM + "ObjectRef", id=d.get("id", ""), home=self.home) for d in documents
            ]
        return m.query_response(got.errors, documents, status=got.status)

    # --- ITI-39 -------------------------------------------------------------------------------------
    async def cross_gateway_retrieve(self, request: SoapRequest) -> SoapResponse:
        """ITI-39 Cross Gateway Retrieve (ITI TF-2b §3.39.4.1.3)."""
        wanted = m.requested_documents(request.body)
        errors: list[XdsError] = []
        by_repository: dict[str, list[m.DocumentRequest]] = {}
        for req in wanted:
            if not req.home:
                errors.append(
                    XdsError(
                        v.XDSMissingHomeCommunityId,
                        f"the request for document {req.unique_id} names no HomeCommunityId",
                        req.unique_id,
                    )
                )
            elif req.home != self.home:
                errors.append(
                    XdsError(
                        v.XDSUnknownCommunity, f"this is community {self.home}, not {req.home}", req.home
                    )
                )
            elif req.repository not in self.repositories:
                errors.append(
                    XdsError(
                        v.XDSUnknownRepositoryId,
                        f"repository {req.repository} is not in community {self.home}",
                        req.repository,
                    )
                )
            else:
                by_repository.setdefault(req.repository, []).append(req)
        documents: list[bytes] = []
        attachments = []
        for repository, reqs in by_repository.items():
            body = safexml.parse(m.retrieve_request(reqs))
            inner = dataclasses.replace(request, action=v.ACTION_RETRIEVE, body=body, attachments={})
            answer = await self.repositories[repository](inner)
            root = answer.body if isinstance(answer.body, etree._Element) else safexml.parse(answer.body)
            _, found = m.read_registry_response(root)
            errors += found
            documents += [etree.tostring(d) for d in root.iter(m.XDSB + "DocumentResponse")]
            attachments += answer.attachments
        body_bytes = m.retrieve_response(errors, documents)
        return SoapResponse(v.ACTION_XCA_RETRIEVE_RESPONSE, body_bytes, attachments=attachments)

    def endpoint(self, max_body_bytes: int, read_timeout: float = 60.0) -> tuple[SoapEndpoint, SoapEndpoint]:
        """The two SOAP endpoints: ITI-38 (``/xca/query``) and ITI-39 (``/xca/retrieve``)."""
        query = SoapEndpoint(
            {v.ACTION_XCA_QUERY: self.cross_gateway_query},
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
        )
        retrieve = SoapEndpoint(
            {v.ACTION_XCA_RETRIEVE: self.cross_gateway_retrieve},
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
        )
        return query, retrieve
