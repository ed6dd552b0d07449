"""How a repository registers what it stores: ITI-42 in process, or over HTTP to a remote registry.

ITI TF-2 §3.41.4.1.3: the repository forwards the metadata to the registry with ITI-42 and returns
the registry's answer. In process, the call goes straight to the registrar (no HTTP, same
validation); remotely, a SOAP 1.2 ITI-42 request is sent and the registry's errors come back as they
were.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import Connection, select

from xds.database import reader
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.model import DocumentEntry, Submission
from xds.metadata.registry_response import parse_registry_response
from xds.registry import schema as t
from xds.registry.service import RegistryService
from xds.repository.service import LookupFunction, RegisterFunction, RegistryUnreachable
from xds.soap.envelope import SoapFault, build_request
from xds.soap.mtom import parse_message
from xds.trust.wssecurity import REQUEST_ASSERTION, MessageSigner


class LocalRegistration:
    """ITI-42 into the registry of this process: straight to its registrar, same validation.

    The repository's rows live in the registry's database (``engine``), so a repository can have
    its documents recorded in the registration's own transaction (``within``): the document is
    registered and stored at once, or neither.
    """

    def __init__(self, registry: RegistryService) -> None:
        self.registrar = registry.registrar
        self.engine = registry.engine

    async def __call__(
        self, sub: Submission, within: Callable[[Connection], None] | None = None
    ) -> list[XdsError]:
        try:
            await self.registrar.register_together(sub, within)
        except XdsException as exc:
            return exc.errors
        return []


def local(registry: RegistryService) -> tuple[RegisterFunction, LookupFunction]:
    """Register into the registry of this process."""
    read_engine = reader(registry.engine)

    def lookup(unique_id: str, repository_id: str) -> bool | None:
        d = t.documents.c
        with read_engine.connect() as conn:
            row = conn.execute(
                select(d.seq)
                .where(d.unique_id == unique_id, d.repository_unique_id == repository_id)
                .limit(1)
            ).first()
        return row is not None

    return LocalRegistration(registry), lookup


def remote(
    url: str, *, timeout: float = 60.0, signing: tuple[bytes, bytes] | None = None
) -> tuple[RegisterFunction, LookupFunction]:
    """Register with ITI-42 at ``url``; after a crash, ask it with ITI-18 what it holds.

    With ``signing`` (this institution's key and certificate PEM) and a verified assertion on the
    ITI-41 request being handled, the ITI-42 carries that assertion and is signed by this
    institution (WS-Security, ITI TF-2 §3.40.4.1.2), as the registry's trust model requires.
    """

    async def register(sub: Submission) -> list[XdsError]:
        data, content_type = build_request(v.ACTION_REGISTER, ebrim.submit_objects_request_bytes(sub), to=url)
        token = REQUEST_ASSERTION.get()
        if signing is not None and token is not None:
            data = MessageSigner(*signing, assertion=token).secure(data)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.post(url, content=data, headers={"Content-Type": content_type})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RegistryUnreachable(f"the registry at {url} could not be reached ({exc})") from exc
        try:
            message = parse_message(response.headers.get("content-type", ""), response.content)
        except SoapFault as fault:
            return [XdsError(v.XDSRegistryError, f"the registry answered with a SOAP fault: {fault.reason}")]
        _, errors = parse_registry_response(message.body)
        return errors

    def lookup(unique_id: str, repository_id: str) -> bool | None:
        """ITI-18 GetDocuments by uniqueId: is the entry there, with this repository? None: cannot tell."""
        from xml.sax.saxutils import escape

        body = (
            f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
            f'<query:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>'
            f'<rim:AdhocQuery id="{v.SQ_GET_DOCUMENTS}">'
            f"<rim:Slot name=\"$XDSDocumentEntryUniqueId\"><rim:ValueList><rim:Value>('{escape(unique_id)}')"
            f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
        )
        data, content_type = build_request(v.ACTION_STORED_QUERY, body.encode(), to=url)
        try:
            response = httpx.post(url, content=data, headers={"Content-Type": content_type}, timeout=timeout)
            message = parse_message(response.headers.get("content-type", ""), response.content)
        except (httpx.HTTPError, SoapFault):
            return None
        status, _ = parse_registry_response(message.body)
        if status != v.RESPONSE_SUCCESS:
            return None
        for entry in message.body.iter(f"{{{v.NS_RIM}}}ExtrinsicObject"):
            doc = ebrim.parse_object(entry)
            if isinstance(doc, DocumentEntry) and doc.repository_unique_id == repository_id:
                return True
        return False

    return register, lookup
