"""A Document Source and Document Consumer client: ITI-41 with MTOM, ITI-43 streamed to disk.

Requests stream their documents from disk in MTOM parts (W3C XOP; ITI TF-2 §V.3.6), answers are
read as they arrive with the incremental multipart parser, spooling documents to files, so neither
side holds a whole document in memory.
"""

from __future__ import annotations

import mimetypes
import os
import random
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from xds import safexml, samples
from xds.audit.observer import ClientAuditor
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.model import Classification, DocumentEntry, LocalizedString, Slot, Submission
from xds.metadata.registry_response import parse_registry_response, response_slots
from xds.soap.envelope import Attachment, SoapFault, envelope_bytes, parse_envelope
from xds.soap.mtom import MultipartParser, multipart_content_type, new_boundary, resolve_xop

CHUNK = 1024 * 1024

# formatCode per kind of file (shared/profiles/norway.md; IHE mimeTypeSufficient for the rest)
FORMATS = {
    "application/pdf": ("urn:no:ehelse:document:pdf", "PDF"),
    "application/dicom": ("urn:no:ehelse:document:image", "Bilde"),
    "text/plain": ("urn:no:ehelse:document:text", "Tekst"),
}
MIME_SUFFICIENT = ("urn:ihe:iti:xds:2017:mimeTypeSufficient", "Mime type sufficient")


Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 when not known)


@dataclass
class Outcome:
    """What a repository answered: status (Success / PartialSuccess / Failure) and its errors."""

    status: str
    errors: list[XdsError]
    slots: dict[str, list[str]] = field(default_factory=dict)  # rs:ResponseSlotList

    @property
    def ok(self) -> bool:
        return self.status == v.RESPONSE_SUCCESS

    @property
    def repository_unique_id(self) -> str:
        """The repositoryUniqueId an ITI-41 answer of this project names (its ResponseSlotList)."""
        return (self.slots.get("repositoryUniqueId") or [""])[0]


@dataclass
class Retrieved:
    unique_id: str
    repository_id: str
    mime_type: str
    path: Path


def guess_mime_type(path: Path) -> str:
    """The file's MIME type: DICOM by its preamble, others by name."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "application/dicom"
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def describe_files(
    files: list[Path],
    patient: str,
    *,
    class_code: str = "A00-1",
    type_code: str = "A03-2",
    confidentiality: str = "N",
    title: str | None = None,
    rng: random.Random | None = None,
) -> tuple[Submission, dict[str, tuple[Path, str]]]:
    """ITI-41 metadata for ordinary files: one DocumentEntry per file in one SubmissionSet.

    The entries carry the Norwegian profile's codes (Volven 9602/9603) and formatCodes; hash and
    size are left to the repository, which computes them while the bytes stream in.
    """
    rng = rng or random.Random()
    sample = samples.submission(patient, documents=len(files), rng=rng)
    documents: dict[str, tuple[Path, str]] = {}
    for doc, path in zip(sample.documents, files, strict=True):
        mime = guess_mime_type(path)
        doc.mime_type = mime
        doc.name = [LocalizedString(title or path.name, lang="nb-NO")]
        doc.slots = [s for s in doc.slots if s.name not in ("hash", "size", "repositoryUniqueId")]
        _set_code(doc, v.DE_CLASS_CODE, class_code, samples.VOLVEN + "9602")
        _set_code(doc, v.DE_TYPE_CODE, type_code, samples.VOLVEN + "9602")
        _set_code(doc, v.DE_CONFIDENTIALITY_CODE, confidentiality, samples.VOLVEN + "9603")
        fmt = FORMATS.get(mime) or MIME_SUFFICIENT
        _set_code(
            doc,
            v.DE_FORMAT_CODE,
            fmt[0],
            "1.3.6.1.4.1.19376.1.2.3" if fmt is MIME_SUFFICIENT else "2.16.578.1.12.4.1.1.9660",
        )
        documents[doc.id] = (path, mime)
    return sample.submission, documents


def _set_code(doc: DocumentEntry, scheme: str, code: str, system: str) -> None:
    for c in doc.classifications_of(scheme):
        doc.classifications.remove(c)
    doc.classifications.append(
        Classification(
            id=f"cl-{uuid.uuid4().hex[:12]}",
            classified_object=doc.id,
            classification_scheme=scheme,
            node_representation=code,
            name=[LocalizedString(code)],
            slots=[Slot("codingScheme", [system])],
        )
    )


class EnvelopeSecurity(Protocol):
    """How a client secures its requests and checks the answers (xds.trust.wssecurity.SecureChannel).

    ``secure`` returns the envelope signed (``parts``: the MTOM parts by Content-ID, signed with it);
    ``verify_answer`` raises when an answer is not signed as it must be.
    """

    def secure(self, envelope: bytes, *, parts: Mapping[str, Attachment] | None = None) -> bytes: ...

    def verify_answer(
        self,
        envelope: object,
        *,
        relates_to: str | None = None,
        parts: Mapping[str, Attachment] | None = None,
    ) -> None: ...


class UntrustedAnswer(ValueError):
    """The answer did not pass the client's WS-Security checks."""


class RepositoryClient:
    """ITI-41, ITI-43 and ITI-86 against one repository endpoint, signed when given ``security``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 300.0,
        security: EnvelopeSecurity | None = None,
        auditor: ClientAuditor | None = None,
    ) -> None:
        self.url = url
        self.http = httpx.Client(timeout=timeout)
        self.security = security
        self.auditor = auditor  # the requesting side's audit trail (ITI TF-2a §3.20), when given

    def _audit(self, action: str, body: bytes, response: object) -> None:
        if self.auditor is not None:
            self.auditor.requested(action, safexml.parse(body), response, self.url)

    def _secure(
        self, envelope: bytes, parts: Mapping[str, Attachment] | None = None
    ) -> tuple[bytes, str | None]:
        """The envelope as sent, and its MessageID (for the answer's RelatesTo)."""
        if self.security is None:
            return envelope, None
        message_id = safexml.parse(envelope).findtext(f"{{{v.NS_SOAP12}}}Header/{{{v.NS_WSA}}}MessageID")
        return self.security.secure(envelope, parts=parts), (message_id or "").strip() or None

    def _check_answer(
        self, root: bytes, relates_to: str | None, parts: Mapping[str, Attachment] | None = None
    ) -> None:
        if self.security is None:
            return
        envelope = safexml.parse(root)
        is_fault = envelope.find(f"{{{v.NS_SOAP12}}}Body/{{{v.NS_SOAP12}}}Fault") is not None
        if is_fault and envelope.find(f"{{{v.NS_SOAP12}}}Header") is None:
            return  # an unsigned fault is reported as the fault it is; it proves nothing
        try:
            self.security.verify_answer(envelope, relates_to=relates_to, parts=parts)
        except Exception as exc:  # the trust library's refusal, whatever its class
            raise UntrustedAnswer(f"the answer is not trusted: {exc}") from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RepositoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ITI-41 -----------------------------------------------------------------------------------
    def provide_and_register(
        self,
        submission: Submission,
        documents: dict[str, tuple[Path, str]],
        progress: Progress | None = None,
    ) -> Outcome:
        """Send ``submission`` with each document streamed from its file as an MTOM part;
        ``progress(sent, total)`` is told the document bytes sent so far."""
        cids = {doc_id: f"{uuid.uuid4().hex}@xds-client" for doc_id in documents}
        body = (
            f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
            + ebrim.submit_objects_request_bytes(submission)
            + "".join(
                f'<xdsb:Document id="{doc_id}"><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cid}"/></xdsb:Document>'
                for doc_id, cid in cids.items()
            ).encode()
            + b"</xdsb:ProvideAndRegisterDocumentSetRequest>"
        )
        action = v.ACTION_PROVIDE_AND_REGISTER
        envelope = envelope_bytes(action, body, to=self.url, reply_to_anonymous=True)
        parts = {
            cids[doc_id]: Attachment(cids[doc_id], mime, path=str(path))
            for doc_id, (path, mime) in documents.items()
        }
        envelope, message_id = self._secure(envelope, parts)
        boundary = new_boundary()
        root_id = f"root.{uuid.uuid4().hex}@xds-client"

        total = sum(path.stat().st_size for path, _ in documents.values())
        sent = 0

        def parts() -> Iterator[bytes]:
            nonlocal sent
            yield (
                f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
                f'type="application/soap+xml"\r\nContent-ID: <{root_id}>\r\n\r\n'
            ).encode() + envelope
            for doc_id, (path, mime) in documents.items():
                yield (
                    f"\r\n--{boundary}\r\nContent-Type: {mime}\r\nContent-Transfer-Encoding: binary\r\n"
                    f"Content-ID: <{cids[doc_id]}>\r\n\r\n"
                ).encode()
                with open(path, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        sent += len(chunk)
                        if progress is not None:
                            progress(sent, total)
                        yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        response = self.http.post(
            self.url,
            content=parts(),
            headers={"Content-Type": multipart_content_type(boundary, root_id, action)},
        )
        self._audit(action, ebrim.submit_objects_request_bytes(submission), response.content)
        return self._outcome(response.headers.get("content-type", ""), response.content, message_id)

    def _outcome(self, content_type: str, data: bytes, message_id: str | None) -> Outcome:
        if self.security is not None:
            from xds.soap.mtom import parse_multipart_bytes

            media = content_type.split(";")[0].strip().lower()
            root, parts = (
                parse_multipart_bytes(content_type, data) if media.startswith("multipart/") else (data, {})
            )
            self._check_answer(root, message_id, parts)
        return _outcome(content_type, data)

    # --- ITI-43 -----------------------------------------------------------------------------------
    def retrieve(
        self, repository_id: str, unique_ids: list[str], out_dir: Path, progress: Progress | None = None
    ) -> tuple[Outcome, list[Retrieved]]:
        """Retrieve documents into ``out_dir`` (one file per document, named by uniqueId);
        ``progress(received, total)`` is told the answer's bytes so far (total 0 when not known)."""
        requests = "".join(
            f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repository_id}</xdsb:RepositoryUniqueId>"
            f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
            for uid in unique_ids
        )
        body = f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">{requests}</xdsb:RetrieveDocumentSetRequest>'
        action = v.ACTION_RETRIEVE
        data, message_id = self._secure(
            envelope_bytes(action, body.encode(), to=self.url, reply_to_anonymous=True)
        )
        headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".retrieve-") as spool:
            with self.http.stream("POST", self.url, content=data, headers=headers) as response:
                ctype = response.headers.get("content-type", "")
                if not ctype.lower().startswith("multipart/"):
                    answer = response.read()
                    self._audit(action, body.encode(), answer)
                    return self._outcome(ctype, answer, message_id), []
                parser = MultipartParser(ctype, spool_threshold=256 * 1024, tmp_dir=spool, digest=False)
                total = int(response.headers.get("content-length") or 0)
                received = 0
                for chunk in response.iter_raw():
                    parser.feed(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
                root, attachments = parser.close()
            self._check_answer(root, message_id, attachments)
            message = parse_envelope(root, attachments, mtom=True)
            self._audit(action, body.encode(), message.body)
            status, errors = parse_registry_response(message.body.find(f"{{{v.NS_RS}}}RegistryResponse"))
            found: list[Retrieved] = []
            x = "{" + v.NS_XDSB + "}"
            for resp in message.body.iter(x + "DocumentResponse"):
                uid = resp.findtext(x + "DocumentUniqueId") or ""
                document = resp.find(x + "Document")
                att = resolve_xop(document, attachments) if document is not None else None
                if att is None:
                    continue
                target = out_dir / _safe_name(uid)
                if att.path is not None:
                    os.replace(att.path, target)  # spooled inside out_dir: a rename, not a copy
                else:
                    with open(target, "wb") as out:
                        att.copy_to(out)
                found.append(
                    Retrieved(
                        uid,
                        resp.findtext(x + "RepositoryUniqueId") or "",
                        resp.findtext(x + "mimeType") or "",
                        target,
                    )
                )
        return Outcome(status, errors), found

    # --- ITI-86 -----------------------------------------------------------------------------------
    def remove(self, repository_id: str, unique_ids: list[str]) -> Outcome:
        """ITI-86 Remove Documents: the repository deletes the documents' bytes."""
        requests = "".join(
            f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repository_id}</xdsb:RepositoryUniqueId>"
            f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
            for uid in unique_ids
        )
        body = f'<rmd:RemoveDocumentsRequest xmlns:rmd="{v.NS_RMD}" xmlns:xdsb="{v.NS_XDSB}">{requests}</rmd:RemoveDocumentsRequest>'
        action = v.ACTION_REMOVE_DOCUMENTS
        data, message_id = self._secure(
            envelope_bytes(action, body.encode(), to=self.url, reply_to_anonymous=True)
        )
        headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
        response = self.http.post(self.url, content=data, headers=headers)
        self._audit(action, body.encode(), response.content)
        return self._outcome(response.headers.get("content-type", ""), response.content, message_id)


def _safe_name(unique_id: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in unique_id) or "document"


def _outcome(content_type: str, data: bytes) -> Outcome:
    from xds.soap.mtom import parse_message

    try:
        message = parse_message(content_type, data)
    except SoapFault as fault:
        return Outcome("Fault", [XdsError(fault.subcode or fault.code, fault.reason)])
    body = message.body
    if body.tag != f"{{{v.NS_RS}}}RegistryResponse":
        body = body.find(f"{{{v.NS_RS}}}RegistryResponse")
    status, errors = parse_registry_response(body)
    return Outcome(status, errors, response_slots(body))
