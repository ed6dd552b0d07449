"""A Document Consumer for people and programs: stored queries and retrieves, signed when asked.

ITI-18 Registry Stored Query (ITI TF-2a §3.18) against a registry or an initiating gateway, ITI-38
Cross Gateway Query (ITI TF-2b §3.38) against a responding gateway, ITI-43 / ITI-39 retrieves.
With a :class:`Requester` every request carries a fresh XUA assertion (ITI TF-2b §3.40) signed by
the identity provider and the institution's WS-Security signature; the answer's signature is then
checked against the trust anchors. :func:`rows` turns LeafClass answers into the table
``xds query`` prints.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from lxml import etree

from xds import safexml
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.registry_response import parse_registry_response
from xds.soap.envelope import SoapRequest, build_request, parse_envelope
from xds.soap.mtom import MultipartParser, resolve_xop
from xds.trust.assertion import DEFAULT_AUDIENCE, TrustAttributes, build_assertion, sign_assertion
from xds.trust.wssecurity import MessageSigner, verify_answer

QUERY_IDS = {name: uuid for uuid, name in v.STORED_QUERY_NAMES.items()}
_RIM = "{" + v.NS_RIM + "}"
_X = "{" + v.NS_XDSB + "}"

# which parameter a patient id, entryUUIDs and uniqueIds fill, per query (ITI TF-2a §3.18.4.1.2.3.7)
PATIENT_PARAMETER = {
    "FindDocuments": "$XDSDocumentEntryPatientId",
    "FindDocumentsByReferenceId": "$XDSDocumentEntryPatientId",
    "FindSubmissionSets": "$XDSSubmissionSetPatientId",
    "FindFolders": "$XDSFolderPatientId",
    "GetAll": "$patientId",
}
STATUS_PARAMETERS = {
    "FindDocuments": ("$XDSDocumentEntryStatus",),
    "FindDocumentsByReferenceId": ("$XDSDocumentEntryStatus",),
    "FindSubmissionSets": ("$XDSSubmissionSetStatus",),
    "FindFolders": ("$XDSFolderStatus",),
    "GetAll": ("$XDSDocumentEntryStatus", "$XDSSubmissionSetStatus", "$XDSFolderStatus"),
}
UUID_PARAMETER = {
    "GetDocuments": "$XDSDocumentEntryEntryUUID",
    "GetFolders": "$XDSFolderEntryUUID",
    "GetAssociations": "$uuid",
    "GetDocumentsAndAssociations": "$XDSDocumentEntryEntryUUID",
    "GetSubmissionSets": "$uuid",
    "GetSubmissionSetAndContents": "$XDSSubmissionSetEntryUUID",
    "GetFolderAndContents": "$XDSFolderEntryUUID",
    "GetFoldersForDocument": "$XDSDocumentEntryEntryUUID",
    "GetRelatedDocuments": "$XDSDocumentEntryEntryUUID",
}
UNIQUE_ID_PARAMETER = {
    "GetDocuments": "$XDSDocumentEntryUniqueId",
    "GetFolders": "$XDSFolderUniqueId",
    "GetDocumentsAndAssociations": "$XDSDocumentEntryUniqueId",
    "GetSubmissionSetAndContents": "$XDSSubmissionSetUniqueId",
    "GetFolderAndContents": "$XDSFolderUniqueId",
    "GetFoldersForDocument": "$XDSDocumentEntryUniqueId",
    "GetRelatedDocuments": "$XDSDocumentEntryUniqueId",
}
# queries whose entryUUID / uniqueId parameter takes one value, not a list
SINGLE_VALUED = frozenset(
    {"GetSubmissionSetAndContents", "GetFolderAndContents", "GetFoldersForDocument", "GetRelatedDocuments"}
)


@dataclass
class Requester:
    """Who asks: the identity provider that vouches (XUA) and the institution that signs (WS-Security)."""

    attributes: TrustAttributes
    issuer: str
    idp_key: bytes
    idp_cert: bytes
    key: bytes
    cert: bytes
    anchors: str = ""  # PEM trust anchors for checking the answer's signature ("" = not checked)
    audience: str = DEFAULT_AUDIENCE

    @classmethod
    def from_keys(
        cls, directory: str | Path, institution: str, attributes: TrustAttributes, issuer: str
    ) -> Requester:
        """From the files ``xds keys init`` writes: ca.pem, idp.pem/.key, <institution>.pem/.key."""
        d = Path(directory)
        return cls(
            attributes,
            issuer,
            (d / "idp.key").read_bytes(),
            (d / "idp.pem").read_bytes(),
            (d / f"{institution}.key").read_bytes(),
            (d / f"{institution}.pem").read_bytes(),
            anchors=str(d / "ca.pem"),
        )

    def secure(self, envelope: bytes) -> bytes:
        """``envelope`` with a fresh signed assertion and the institution's signature."""
        token = sign_assertion(
            build_assertion(self.attributes, issuer=self.issuer, audience=self.audience),
            self.idp_key,
            self.idp_cert,
        )
        return MessageSigner(self.key, self.cert, assertion=token).secure(envelope)


def query_value(values: list[str], single: bool) -> str:
    quoted = [f"'{x}'" for x in values]
    return quoted[0] if single and len(quoted) == 1 else "(" + ",".join(quoted) + ")"


def adhoc_query_request(
    query: str, parameters: dict[str, str], *, return_type: str = v.RETURN_LEAF_CLASS, home: str = ""
) -> bytes:
    """An ``query:AdhocQueryRequest`` for the stored query named ``query`` (or its urn:uuid id)."""
    query_id = QUERY_IDS.get(query, query)
    if query_id not in v.STORED_QUERY_NAMES:
        raise ValueError(f"unknown stored query {query!r}; one of {', '.join(sorted(QUERY_IDS))}")
    root = etree.Element(f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM})
    etree.SubElement(
        root, f"{{{v.NS_QUERY}}}ResponseOption", returnType=return_type, returnComposedObjects="true"
    )
    adhoc = etree.SubElement(root, _RIM + "AdhocQuery", id=query_id)
    if home:
        adhoc.set("home", home)
    for name, value in parameters.items():
        slot = etree.SubElement(adhoc, _RIM + "Slot", name=name)
        etree.SubElement(etree.SubElement(slot, _RIM + "ValueList"), _RIM + "Value").text = value
    return etree.tostring(root)


def standard_parameters(
    query: str,
    *,
    patient: str = "",
    uuids: list[str] | None = None,
    unique_ids: list[str] | None = None,
    statuses: tuple[str, ...] = (v.STATUS_APPROVED,),
) -> dict[str, str]:
    """The usual parameters of ``query``: its patient id, statuses, entryUUIDs or uniqueIds."""
    name = v.STORED_QUERY_NAMES.get(query, query)
    params: dict[str, str] = {}
    if patient and name in PATIENT_PARAMETER:
        params[PATIENT_PARAMETER[name]] = query_value([patient], True)
        for status in STATUS_PARAMETERS.get(name, ()):
            params[status] = query_value(list(statuses), False)
    single = name in SINGLE_VALUED
    if uuids and name in UUID_PARAMETER:
        params[UUID_PARAMETER[name]] = query_value(uuids, single)
    if unique_ids and name in UNIQUE_ID_PARAMETER:
        params[UNIQUE_ID_PARAMETER[name]] = query_value(unique_ids, single)
    return params


@dataclass
class Answer:
    """A query's answer: status, errors, returned objects, the raw envelope."""

    status: str
    errors: list[XdsError]
    objects: list[etree._Element] = field(default_factory=list)
    raw: bytes = b""
    fault: str = ""

    @property
    def short_status(self) -> str:
        return self.fault and "Fault" or self.status.rsplit(":", 1)[-1]


def _post(url: str, action: str, body: bytes, requester: Requester | None, timeout: float) -> httpx.Response:
    envelope, ctype = build_request(action, body, to=url)
    if requester is not None:
        envelope = requester.secure(envelope)
    return httpx.post(url, content=envelope, headers={"Content-Type": ctype}, timeout=timeout)


def stored_query(
    url: str, body: bytes, *, requester: Requester | None = None, timeout: float = 60.0
) -> Answer:
    """Send a stored query: ITI-38 to an ``/xca/query`` endpoint, ITI-18 to any other."""
    action = v.ACTION_XCA_QUERY if url.rstrip("/").endswith("/xca/query") else v.ACTION_STORED_QUERY
    response = _post(url, action, body, requester, timeout)
    from xds.soap.envelope import SoapFault

    try:
        message = parse_envelope(response.content)
    except SoapFault as fault:
        sub = f" ({fault.subcode})" if fault.subcode else ""
        return Answer("Fault", [], raw=response.content, fault=f"{fault.reason}{sub}")
    _check_answer(message, requester)
    status, errors = parse_registry_response(message.body)
    found = message.body.find(_RIM + "RegistryObjectList")
    objects = [o for o in found if isinstance(o.tag, str)] if found is not None else []
    return Answer(status, errors, objects, raw=response.content)


def _check_answer(message: SoapRequest, requester: Requester | None) -> None:
    """The answer to a signed request is signed by an institution under the anchors (MTOM parts too)."""
    if requester is not None and requester.anchors:
        verify_answer(message.envelope, anchors=requester.anchors, parts=message.attachments)


@dataclass
class Document:
    unique_id: str
    repository_id: str
    home: str
    mime_type: str
    path: Path


def retrieve(
    url: str,
    wanted: list[tuple[str, str, str]],
    out_dir: Path,
    *,
    requester: Requester | None = None,
    timeout: float = 300.0,
) -> tuple[Answer, list[Document]]:
    """ITI-43 (or ITI-39 to ``/xca/retrieve``) for (homeCommunityId, repositoryUniqueId, uniqueId)s."""
    from xds.soap.envelope import SoapFault

    action = v.ACTION_XCA_RETRIEVE if url.rstrip("/").endswith("/xca/retrieve") else v.ACTION_RETRIEVE
    requests = "".join(
        "<xdsb:DocumentRequest>"
        + (f"<xdsb:HomeCommunityId>{home}</xdsb:HomeCommunityId>" if home else "")
        + f"<xdsb:RepositoryUniqueId>{repo}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        for home, repo, uid in wanted
    )
    body = f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">{requests}</xdsb:RetrieveDocumentSetRequest>'
    envelope, ctype = build_request(action, body.encode(), to=url)
    if requester is not None:
        envelope = requester.secure(envelope)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".retrieve-") as spool:
        with httpx.stream(
            "POST", url, content=envelope, headers={"Content-Type": ctype}, timeout=timeout
        ) as r:
            answer_type = r.headers.get("content-type", "")
            if answer_type.lower().startswith("multipart/"):
                parser = MultipartParser(answer_type, spool_threshold=256 * 1024, tmp_dir=spool, digest=False)
                for chunk in r.iter_raw():
                    parser.feed(chunk)
                root, attachments = parser.close()
            else:
                root, attachments = r.read(), {}
        try:
            message = parse_envelope(root, attachments, mtom=bool(attachments))
        except SoapFault as fault:
            sub = f" ({fault.subcode})" if fault.subcode else ""
            return Answer("Fault", [], raw=root, fault=f"{fault.reason}{sub}"), []
        _check_answer(message, requester)
        status, errors = parse_registry_response(message.body.find("{" + v.NS_RS + "}RegistryResponse"))
        found = []
        for resp in message.body.iter(_X + "DocumentResponse"):
            uid = resp.findtext(_X + "DocumentUniqueId") or ""
            document = resp.find(_X + "Document")
            if document is None:
                continue
            att = resolve_xop(document, attachments)
            target = out_dir / "".join(c if c.isalnum() or c in ".-_" else "_" for c in uid)
            if att is not None and att.path is not None:
                os.replace(att.path, target)
            elif att is not None:
                target.write_bytes(att.read())
            else:
                import base64

                target.write_bytes(base64.b64decode("".join((document.text or "").split())))
            found.append(
                Document(
                    uid,
                    resp.findtext(_X + "RepositoryUniqueId") or "",
                    resp.findtext(_X + "HomeCommunityId") or "",
                    resp.findtext(_X + "mimeType") or "",
                    target,
                )
            )
    return Answer(status, errors, raw=root), found


# --- the readable table ------------------------------------------------------------------------------
COLUMNS = (
    "title",
    "class",
    "type",
    "date",
    "author institution",
    "confidentiality",
    "repository/community",
    "uniqueId",
)


def rows(objects: list[etree._Element]) -> list[dict[str, str]]:
    """One row per returned DocumentEntry, SubmissionSet or Folder (associations are counted apart)."""
    out = []
    for obj in objects:
        local = etree.QName(obj).localname
        if local == "ExtrinsicObject":
            out.append(_document_row(obj))
        elif local == "RegistryPackage":
            out.append(_package_row(obj))
        elif local == "ObjectRef":
            out.append(
                dict.fromkeys(COLUMNS, "")
                | {"title": obj.get("id", ""), "repository/community": obj.get("home", "")}
            )
    return out


def _slot(obj: etree._Element, name: str) -> list[str]:
    for slot in obj.findall(_RIM + "Slot"):
        if slot.get("name") == name:
            return [(x.text or "").strip() for x in slot.iter(_RIM + "Value")]
    return []


def _name(obj: etree._Element) -> str:
    found = obj.find(f"{_RIM}Name/{_RIM}LocalizedString")
    return found.get("value", "") if found is not None else ""


def _codes(obj: etree._Element, scheme: str) -> list[etree._Element]:
    return [c for c in obj.findall(_RIM + "Classification") if c.get("classificationScheme") == scheme]


def _code_text(obj: etree._Element, scheme: str) -> str:
    texts = []
    for c in _codes(obj, scheme):
        display = _name(c)
        code = c.get("nodeRepresentation", "")
        texts.append(f"{code} {display}".strip() if display and display != code else code)
    return ", ".join(texts)


def _external(obj: etree._Element, scheme: str) -> str:
    for e in obj.findall(_RIM + "ExternalIdentifier"):
        if e.get("identificationScheme") == scheme:
            return e.get("value", "")
    return ""


def _institution(obj: etree._Element, scheme: str) -> str:
    for c in _codes(obj, scheme):
        for value in _slot(c, "authorInstitution"):
            return value.split("^", 1)[0]
    return ""


def _date(dtm: str) -> str:
    return f"{dtm[:4]}-{dtm[4:6]}-{dtm[6:8]}" if len(dtm) >= 8 else dtm


def _document_row(obj: etree._Element) -> dict[str, str]:
    place = " / ".join(x for x in ((_slot(obj, "repositoryUniqueId") or [""])[0], obj.get("home", "")) if x)
    return {
        "title": _name(obj),
        "class": _code_text(obj, v.DE_CLASS_CODE),
        "type": _code_text(obj, v.DE_TYPE_CODE),
        "date": _date((_slot(obj, "creationTime") or [""])[0]),
        "author institution": _institution(obj, v.DE_AUTHOR),
        "confidentiality": _code_text(obj, v.DE_CONFIDENTIALITY_CODE),
        "repository/community": place,
        "uniqueId": _external(obj, v.DE_UNIQUE_ID),
    }


def _package_row(obj: etree._Element) -> dict[str, str]:
    folder = any(c.get("classificationNode") == v.FOLDER_NODE for c in obj.findall(_RIM + "Classification"))
    return {
        "title": _name(obj),
        "class": "Folder" if folder else "SubmissionSet",
        "type": _code_text(obj, v.SS_CONTENT_TYPE_CODE),
        "date": _date((_slot(obj, "lastUpdateTime" if folder else "submissionTime") or [""])[0]),
        "author institution": _institution(obj, v.SS_AUTHOR),
        "confidentiality": "",
        "repository/community": obj.get("home", ""),
        "uniqueId": _external(obj, v.FOLDER_UNIQUE_ID if folder else v.SS_UNIQUE_ID),
    }


def table(found: list[dict[str, str]], width: int = 36) -> str:
    """The rows as a plain-text table; titles, codes and institutions cut to ``width`` characters,
    identifiers whole (they are there to be copied)."""

    def cut(column: str, text: str) -> str:
        whole = column in ("repository/community", "uniqueId")
        return text if whole or len(text) <= width else text[: width - 1] + "…"

    cells = [[cut(c, r.get(c, "")) for c in COLUMNS] for r in found]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(s.rstrip() for s in out)


def pretty(raw: bytes) -> str:
    """The answer's XML, indented."""
    root = safexml.parse(raw)
    etree.indent(root)
    return etree.tostring(root, encoding="unicode")
