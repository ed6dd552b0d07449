"""Retrieve steps of the NIST test kit (ITI-43, ITI TF-2b §3.43): the answer judged in full.

A ``RetrieveTransaction`` step's answer is judged on every expectation the plan states:

- ``<ReferenceDocument uid>file</ReferenceDocument>``: a DocumentResponse for that uniqueId comes
  back, from the repository asked, and its bytes are the file's;
- ``<ExpectedMimeType>``: every returned document carries that mimeType;
- ``<ReferenceMetadata testdir step>``: each returned document's mimeType, hash (SHA-1 of the bytes)
  and size equal the DocumentEntry that step's query answer holds, and so does its repository;
- a document this replay provided itself comes back with the mimeType it was submitted with;
- ``<Assertions>``: XPaths over the step's log, with the toolkit's ``$hash_docN$``,
  ``$size_docN$``, ``$mimetype_docN$``, ``$repuid_docN$`` and ``$uid_docN$`` of the N-th document;
- ``<ExpectedContents>``: empty says nothing; anything in it is reported unjudged.

What cannot be judged (a reference file missing from the kit, an assertion naming a value no step
made) is returned as unjudged — the step is then not applicable, never passed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from xds.metadata import vocabulary as v
from xds.soap.envelope import Attachment, SoapFault
from xds.soap.mtom import inline_or_xop_bytes

_X = "{" + v.NS_XDSB + "}"
_R = "{" + v.NS_RIM + "}"
_UNRESOLVED = re.compile(r"\$[A-Za-z0-9_]+\$")


@dataclass(frozen=True, slots=True)
class Retrieved:
    """One DocumentResponse of an answer."""

    uid: str
    repository: str
    mime_type: str
    data: bytes | None  # None: no Document content, or content that could not be read

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data or b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Provided:
    """A document this replay sent with ITI-41: its file and the mimeType its metadata gave it."""

    path: Path
    mime_type: str


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def retrieved_documents(payload: etree._Element, attachments: dict[str, Attachment]) -> list[Retrieved]:
    """The DocumentResponses of a RetrieveDocumentSetResponse, content read (XOP part or base64)."""
    out = []
    for response in payload.iter(_X + "DocumentResponse"):
        document = response.find(_X + "Document")
        data: bytes | None = None
        if document is not None:
            try:
                data = inline_or_xop_bytes(document, attachments).read()
            except SoapFault:
                data = None
        out.append(
            Retrieved(
                uid=(response.findtext(_X + "DocumentUniqueId") or "").strip(),
                repository=(response.findtext(_X + "RepositoryUniqueId") or "").strip(),
                mime_type=(response.findtext(_X + "mimeType") or "").strip(),
                data=data,
            )
        )
    return out


def requested(request: etree._Element) -> dict[str, str]:
    """document uniqueId -> repositoryUniqueId of each DocumentRequest of a retrieve request."""
    return {
        (r.findtext(_X + "DocumentUniqueId") or "").strip(): (
            r.findtext(_X + "RepositoryUniqueId") or ""
        ).strip()
        for r in request.iter(_X + "DocumentRequest")
    }


def document_symbols(documents: list[Retrieved]) -> dict[str, str]:
    """The toolkit's symbols of the N-th retrieved document, for a retrieve step's assertions."""
    symbols = {}
    for n, doc in enumerate(documents, start=1):
        symbols[f"$hash_doc{n}$"] = doc.sha1
        symbols[f"$size_doc{n}$"] = str(len(doc.data or b""))
        symbols[f"$mimetype_doc{n}$"] = doc.mime_type
        symbols[f"$repuid_doc{n}$"] = doc.repository
        symbols[f"$uid_doc{n}$"] = doc.uid
    return symbols


def judge_documents(
    documents: list[Retrieved],
    asked: Mapping[str, str],
    references: Mapping[str, Path],
    provided: Mapping[str, Provided],
    expected_mime_type: str | None,
) -> Verdict:
    """Bytes, repository and mimeType of each returned document (see the module's list)."""
    verdict = Verdict()
    by_uid = {d.uid: d for d in documents}
    for doc in documents:
        if doc.uid not in asked:
            verdict.problems.append(f"document {doc.uid} came back but was not asked for")
            continue
        if doc.repository != asked[doc.uid]:
            verdict.problems.append(
                f"document {doc.uid} came back from repository {doc.repository!r}, asked of {asked[doc.uid]!r}"
            )
        if doc.data is None:
            verdict.problems.append(f"document {doc.uid} came back without readable content")
        if not doc.mime_type:
            verdict.problems.append(f"document {doc.uid} came back without a mimeType")
        if expected_mime_type is not None and doc.mime_type != expected_mime_type:
            verdict.problems.append(
                f"document {doc.uid} has mimeType {doc.mime_type!r}, expected {expected_mime_type!r}"
            )
        sent = provided.get(doc.uid)
        if sent is not None and doc.mime_type != sent.mime_type:
            verdict.problems.append(
                f"document {doc.uid} has mimeType {doc.mime_type!r}, submitted as {sent.mime_type!r}"
            )
    for uid, path in references.items():
        doc = by_uid.get(uid)
        if doc is None:
            verdict.problems.append(f"document {uid} was not returned")
            continue
        expected = _expected_bytes(uid, path, provided.get(uid), verdict)
        if expected is not None and doc.data is not None and doc.data != expected:
            verdict.problems.append(
                f"document {uid}: {len(doc.data)} bytes (SHA-1 {doc.sha1}) returned, "
                f"{len(expected)} bytes (SHA-1 {hashlib.sha1(expected).hexdigest()}) expected"
            )
    return verdict


def _expected_bytes(uid: str, path: Path, sent: Provided | None, verdict: Verdict) -> bytes | None:
    """The bytes ``uid`` must have: the reference file's, or what this replay sent under that uniqueId.

    The kit names, in one place (12029), a reference file other than the one its own submission
    sent; a repository must return what it was given, so the bytes sent are the expectation then.
    """
    reference = path.read_bytes() if path.is_file() else None
    submitted = sent.path.read_bytes() if sent is not None and sent.path.is_file() else None
    if submitted is not None and reference != submitted:
        verdict.notes.append(
            f"the plan's reference file {path.name} for {uid} is not the file its submission sent "
            f"({sent.path.name}, which the bytes were compared with)"  # type: ignore[union-attr]
        )
        return submitted
    if reference is None:
        verdict.unjudged.append(f"ReferenceDocument {path.name} (not in the kit)")
    return reference


def judge_reference_metadata(documents: list[Retrieved], query_answer: etree._Element) -> list[str]:
    """Each returned document against its DocumentEntry in a query answer (mimeType, hash, size, repository)."""
    entries = {}
    for entry in query_answer.iter(_R + "ExtrinsicObject"):
        for identifier in entry.iter(_R + "ExternalIdentifier"):
            if identifier.get("identificationScheme") == v.DE_UNIQUE_ID:
                entries[identifier.get("value", "")] = entry
    problems = []
    for doc in documents:
        entry = entries.get(doc.uid)
        if entry is None:
            problems.append(f"document {doc.uid} has no DocumentEntry in the reference query's answer")
            continue
        wanted = {
            "mimeType": entry.get("mimeType", ""),
            "hash": _slot(entry, "hash").lower(),
            "size": _slot(entry, "size"),
            "repositoryUniqueId": _slot(entry, "repositoryUniqueId"),
        }
        got = {
            "mimeType": doc.mime_type,
            "hash": doc.sha1,
            "size": str(len(doc.data or b"")),
            "repositoryUniqueId": doc.repository,
        }
        for name, value in wanted.items():
            if value != got[name]:
                problems.append(
                    f"document {doc.uid}: {name} {got[name]!r} returned, the registry's metadata says {value!r}"
                )
    return problems


def unresolved_assertions(assertions: etree._Element | None, symbols: Mapping[str, str]) -> list[str]:
    """Assertions naming a ``$symbol$`` nothing defines (they cannot be judged)."""
    if assertions is None:
        return []
    out = []
    for index, assertion in enumerate(assertions.iter("Assert")):
        left = [s for s in _UNRESOLVED.findall(assertion.text or "") if s not in symbols and s != "$DATE$"]
        if left:
            out.append(f"assertion {assertion.get('id') or index + 1} (no value for {', '.join(left)})")
    return out


def _slot(entry: etree._Element, name: str) -> str:
    for slot in entry.findall(_R + "Slot"):
        if slot.get("name") == name:
            return (slot.findtext(f"{_R}ValueList/{_R}Value") or "").strip()
    return ""


__all__ = [
    "Provided",
    "Retrieved",
    "Verdict",
    "document_symbols",
    "judge_documents",
    "judge_reference_metadata",
    "requested",
    "retrieved_documents",
    "unresolved_assertions",
]
