"""The pieces of ITI-38/39 messages both gateways read and write.

ITI TF-2b §3.38.4.1.2: a query without a patient id parameter (the Get… queries) names the
community it is about in the ``home`` attribute of ``rim:AdhocQuery``; §3.39.4.1.2: every
``DocumentRequest`` names its community in ``HomeCommunityId``. Answers are ebRS 3.0
``query:AdhocQueryResponse`` and ``xdsb:RetrieveDocumentSetResponse`` documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.registry_response import error_list_xml, parse_registry_response, response_status
from xds.soap.envelope import SoapFault

RIM = "{" + v.NS_RIM + "}"
QUERY = "{" + v.NS_QUERY + "}"
RS = "{" + v.NS_RS + "}"
XDSB = "{" + v.NS_XDSB + "}"

# Queries without a patient id parameter: the caller must say which community (ITI TF-2b §3.38.4.1.2)
QUERIES_NEEDING_HOME = frozenset(
    {
        v.SQ_GET_DOCUMENTS,
        v.SQ_GET_FOLDERS,
        v.SQ_GET_ASSOCIATIONS,
        v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS,
        v.SQ_GET_SUBMISSION_SETS,
        v.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
        v.SQ_GET_FOLDER_AND_CONTENTS,
        v.SQ_GET_FOLDERS_FOR_DOCUMENT,
        v.SQ_GET_RELATED_DOCUMENTS,
    }
)
# Queries that can return no DocumentEntry at all (only submission sets, folders, associations)
QUERIES_WITHOUT_DOCUMENTS = frozenset(
    {
        v.SQ_FIND_SUBMISSION_SETS,
        v.SQ_FIND_FOLDERS,
        v.SQ_FIND_FOLDERS_MPQ,
        v.SQ_GET_FOLDERS,
        v.SQ_GET_ASSOCIATIONS,
        v.SQ_GET_SUBMISSION_SETS,
        v.SQ_GET_FOLDERS_FOR_DOCUMENT,
    }
)


def adhoc_query(body: etree._Element) -> etree._Element | None:
    """The ``rim:AdhocQuery`` of an AdhocQueryRequest, or None when the body is something else."""
    if body.tag != QUERY + "AdhocQueryRequest":
        return None
    return body.find(RIM + "AdhocQuery")


def return_type(body: etree._Element) -> str:
    option = body.find(QUERY + "ResponseOption")
    return (option.get("returnType") if option is not None else None) or v.RETURN_OBJECT_REF


def query_response(
    errors: list[XdsError], objects: Iterable[etree._Element | bytes] = (), *, status: str | None = None
) -> bytes:
    """A ``query:AdhocQueryResponse`` with ``errors`` and ``objects`` (ebRS 3.0 §6.3)."""
    status = status or response_status(errors)
    return b"".join(
        [
            f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" xmlns:rs="{v.NS_RS}" status="{status}">'.encode(),
            error_list_xml(errors).encode(),
            f'<rim:RegistryObjectList xmlns:rim="{v.NS_RIM}">'.encode(),
            *(o if isinstance(o, bytes) else etree.tostring(o) for o in objects),
            b"</rim:RegistryObjectList></query:AdhocQueryResponse>",
        ]
    )


@dataclass
class QueryAnswer:
    """What one registry or community answered to a query."""

    status: str
    errors: list[XdsError]
    objects: list[etree._Element]


def read_query_response(body: etree._Element) -> QueryAnswer:
    """Status, errors and returned objects of a ``query:AdhocQueryResponse``."""
    if body.tag != QUERY + "AdhocQueryResponse":
        raise ValueError(f"expected an AdhocQueryResponse, got {etree.QName(body).localname}")
    status, errors = parse_registry_response(body)
    found = body.find(RIM + "RegistryObjectList")
    objects = [el for el in found if isinstance(el.tag, str)] if found is not None else []
    return QueryAnswer(status, errors, objects)


@dataclass
class DocumentRequest:
    """One ``xdsb:DocumentRequest`` of ITI-43/39, with the element it was read from."""

    home: str
    repository: str
    unique_id: str
    element: etree._Element


def document_requests(body: etree._Element) -> list[DocumentRequest]:
    return [
        DocumentRequest(
            (el.findtext(XDSB + "HomeCommunityId") or "").strip(),
            (el.findtext(XDSB + "RepositoryUniqueId") or "").strip(),
            (el.findtext(XDSB + "DocumentUniqueId") or "").strip(),
            el,
        )
        for el in body.iter(XDSB + "DocumentRequest")
    ]


def requested_documents(body: etree._Element) -> list[DocumentRequest]:
    """The DocumentRequests of an ITI-43/ITI-39 request body (ITI TF-2a §3.43.4.1.2); a body of
    another kind, or one asking for nothing, is the sender's fault."""
    if body.tag != XDSB + "RetrieveDocumentSetRequest":
        raise SoapFault("Sender", f"expected RetrieveDocumentSetRequest, got {body.tag}")
    wanted = document_requests(body)
    if not wanted:
        raise SoapFault("Sender", "RetrieveDocumentSetRequest has no DocumentRequest")
    return wanted


def retrieve_request(requests: Iterable[DocumentRequest]) -> bytes:
    """An ``xdsb:RetrieveDocumentSetRequest`` holding copies of ``requests``."""
    return (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
        + b"".join(etree.tostring(r.element) for r in requests)
        + b"</xdsb:RetrieveDocumentSetRequest>"
    )


def retrieve_response(errors: list[XdsError], documents: list[bytes]) -> bytes:
    """An ``xdsb:RetrieveDocumentSetResponse``: PartialSuccess when some documents came with errors."""
    status = response_status(errors, partial=bool(documents))
    return b"".join(
        [
            f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{v.NS_XDSB}">'.encode(),
            f'<rs:RegistryResponse xmlns:rs="{v.NS_RS}" status="{status}">'.encode(),
            error_list_xml(errors).encode(),
            b"</rs:RegistryResponse>",
            *documents,
            b"</xdsb:RetrieveDocumentSetResponse>",
        ]
    )


def located(errors: Iterable[XdsError], location: str) -> list[XdsError]:
    """``errors`` with ``location`` where they name none (which community an error came from)."""
    return [e if e.location else XdsError(e.code, e.context, location, e.severity) for e in errors]


def read_registry_response(root: etree._Element) -> tuple[str, list[XdsError]]:
    """Status and errors of a RegistryResponse, or of the one inside a RetrieveDocumentSetResponse."""
    found = root if root.tag == RS + "RegistryResponse" else root.find(RS + "RegistryResponse")
    if found is None:
        raise ValueError(f"expected a RegistryResponse in {etree.QName(root).localname}")
    return parse_registry_response(found)
