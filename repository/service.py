"""The Document Repository actor: ITI-41, ITI-43 and ITI-86 for one institution's repository.

- ITI-41 Provide and Register Document Set-b (ITI TF-2 §3.41.4.1.3): documents arrive as MTOM/XOP
  parts (or inline base64); size and SHA-1 are computed while the parts stream in, checked against
  any the source supplied, set on the metadata with this repository's ``repositoryUniqueId``, and
  the metadata is registered with ITI-42 — in process or at a remote registry. The registry's
  answer is passed back unchanged. If registration fails, no stored bytes remain.
- ITI-43 Retrieve Document Set (ITI TF-2 §3.43.4.2.3): several documents per request, an MTOM
  answer with each document's mimeType, bytes streamed from disk; unknown documents give
  XDSDocumentUniqueIdError with PartialSuccess, another repository's id XDSUnknownRepositoryId.
- ITI-86 Remove Documents (ITI TF-2 §3.86.4.1.3): deletes the documents' bytes.

Authorisation (a verified requester, ``xds.trust.policy``): ITI-41 writes only what the access
policy lets the requester write for the assertion's patient; each row records the document's
patient, class, confidentiality and providing institution, and ITI-43 and ITI-86 decide on those
facts per document (a refused document gets an XDS error naming the rule). Removal is for the
institution that provided the document or owns the repository (``[[repository]] owner``).

Crash safety: a document's bytes are made durable (fsynced, renamed into the blob store) before
anything points to them. With the registry in this process and database, the document's row is
written in the registration's own transaction: both or neither. With a remote registry the row is
written ``pending`` before the registry hears of it and made ``stored`` after it accepts.
:meth:`recover` settles pending rows against the registry and removes blobs no row points to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from anyio import to_thread
from lxml import etree
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update

from xds.database import QuickReads, reader, run_blocking, write, write_transaction
from xds.database.faults import BUSY, PROVIDE, REPOSITORY, Answer, DatabaseBusy, FailureAnswers, classify
from xds.database.statements import Prepared
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.hl7v2 import is_oid
from xds.metadata.model import DocumentEntry, Submission
from xds.metadata.registry_response import registry_response, response_status
from xds.repository.blobstore import BlobStore
from xds.repository.schema import repository_documents as rd
from xds.soap.endpoint import SoapEndpoint
from xds.soap.envelope import Attachment, SoapFault, SoapRequest, SoapResponse
from xds.soap.mtom import inline_or_xop_bytes
from xds.trust.policy import (
    DOCUMENT,
    READ,
    REMOVE,
    Decision,
    ObjectFacts,
    Requester,
    log_decision,
    organisation_number,
)

if TYPE_CHECKING:
    from xds.registry.access import RegistryAccess

log = logging.getLogger("xds.repository")

_X = "{" + v.NS_XDSB + "}"
_LCM_SUBMIT = "{" + v.NS_LCM + "}SubmitObjectsRequest"
NS_RMD = v.NS_RMD

# ITI-42 as the repository sends it: the submission, answered with the registry's errors.
RegisterFunction = Callable[[Submission], Awaitable[list[XdsError]]]
# Whether the registry holds a document (uniqueId, repositoryUniqueId): True/False, None = cannot tell.
LookupFunction = Callable[[str, str], bool | None]


class RegistryUnreachable(Exception):
    """A remote registry could not be connected to: the ITI-42 request was never sent."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


@dataclass
class _Incoming:
    doc: DocumentEntry
    attachment: Attachment
    sha1: str = ""
    size: int = 0
    resubmitted: bool = False  # the same bytes under this uniqueId were stored here before

    @property
    def brought(self) -> str:
        """The SHA-1 of bytes this submission brought and must undo on failure, or ""."""
        return "" if self.resubmitted else self.sha1


@dataclass
class _Unsettled:
    """What a failed submission (or removal) left that the database could not settle at once."""

    incoming: list[_Incoming]
    how: str  # discard | confirm | ask (the registry, whether it registered) | drop (unused bytes)
    pending_rows: bool = False
    sha1s: list[str] = field(default_factory=list)
    journal: Path | None = None  # removed once settled
    # "ask": the registry's "not registered" is believed only from then on (monotonic time)
    sure_after: float = 0.0


# ITI-41 answer when a remote registry took the submission but did not answer
_UNANSWERED = XdsError(
    v.XDSRegistryNotAvailable,
    "the registry did not answer; the documents are kept only if it registered them",
)


class RepositoryService:
    """One repository: its uniqueId, blob store, table rows and the registry it registers into."""

    def __init__(
        self,
        name: str,
        unique_id: str,
        store_dir: str | Path,
        engine: Engine,
        register: RegisterFunction,
        lookup: LookupFunction,
        *,
        home_community_id: str = "",
        access: RegistryAccess | None = None,
        owner: str = "",
        registry_timeout: float = 60.0,
    ) -> None:
        if not is_oid(unique_id):
            raise ValueError(f"repository {name}: unique_id {unique_id!r} is not an OID")
        self.name = name
        self.unique_id = unique_id
        self.store = BlobStore(store_dir)
        self.engine = engine
        self.reader = reader(engine)
        self.quick = QuickReads(engine)
        self._register = register
        # an in-process registry on this database (registration.LocalRegistration) can record our
        # rows in its own transaction
        self._together = getattr(register, "engine", None) is engine
        self._lookup = lookup
        self.home_community_id = home_community_id
        self._unsettled: list[_Unsettled] = []
        self._kept: set[Path] = set()  # journals of submissions settled in the background
        self._settler: asyncio.Task[None] | None = None
        self.access = access  # the access policy on stored facts (a verified requester only)
        self.owner = organisation_number(owner)  # the institution owning this repository
        self.registry_timeout = registry_timeout  # a remote registry's answer is waited for this long

    def endpoint(
        self, max_body_bytes: int, max_document_bytes: int = 16 * 2**30, read_timeout: float = 60.0
    ) -> SoapEndpoint:
        return SoapEndpoint(
            {
                v.ACTION_PROVIDE_AND_REGISTER: self.provide_and_register,
                v.ACTION_RETRIEVE: self.retrieve,
                v.ACTION_REMOVE_DOCUMENTS: self.remove,
            },
            max_body_bytes=max_body_bytes,
            max_attachment_bytes=max_document_bytes,
            read_timeout=read_timeout,
            spool_threshold=256 * 1024,
            tmp_dir=str(self.store.tmp),
            failure=FailureAnswers(
                REPOSITORY,
                {
                    v.ACTION_PROVIDE_AND_REGISTER: Answer(PROVIDE),
                    v.ACTION_RETRIEVE: Answer(REPOSITORY, body=_retrieve_failure, writes=False),
                },
            ),
        )

    # ---------------------------------------------------------------------------------------------
    # ITI-41
    # ---------------------------------------------------------------------------------------------
    async def provide_and_register(self, request: SoapRequest) -> SoapResponse:
        """ITI-41 Provide and Register Document Set-b (ITI TF-2 §3.41.4.1.3)."""
        try:
            errors = await self._provide(request)
        except XdsException as exc:
            errors = exc.errors
        # stored: the answer names this repository, which a Document Consumer's ITI-43 must address
        # (an rs:ResponseSlotList slot; clients that do not look for it ignore it)
        stored = not any(e.is_error for e in errors)
        slots = {"repositoryUniqueId": self.unique_id} if stored else None
        return SoapResponse(v.ACTION_PROVIDE_AND_REGISTER_RESPONSE, registry_response(errors, slots=slots))

    async def _provide(self, request: SoapRequest) -> list[XdsError]:
        body = request.body
        if body.tag != _X + "ProvideAndRegisterDocumentSetRequest":
            raise XdsException.of(
                v.XDSRepositoryMetadataError, f"expected ProvideAndRegisterDocumentSetRequest, got {body.tag}"
            )
        sor = body.find(_LCM_SUBMIT)
        if sor is None:
            raise XdsException.of(v.XDSRepositoryMetadataError, "no lcm:SubmitObjectsRequest in the request")
        sub = ebrim.parse_submit_objects_request(sor)
        who = self.access.requester(request.security) if self.access is not None else None
        if who is not None and self.access is not None:
            refused = await run_blocking(self.access.check_submission, who, sub)
            if refused:
                return [XdsError(v.XDSRepositoryError, e.context, e.location) for e in refused]
        incoming = self._match_documents(sub, body, request)
        journal = self.store.tmp / f"{uuid.uuid4().hex}.inflight"
        try:
            return await self._store(sub, incoming, journal, who)
        finally:
            if journal not in self._kept:
                journal.unlink(missing_ok=True)

    async def _store(
        self, sub: Submission, incoming: list[_Incoming], journal: Path, who: Requester | None
    ) -> list[XdsError]:
        """Make the documents durable and register them (recording who provided them); undo all
        of it if anything fails."""
        submitter = organisation_number(who.attributes.organisation_id) if who is not None else ""
        pending_rows = False
        try:
            # what this process is about to leave in the store: if it dies before settling, the
            # worker that replaces it settles it (recover_peers)
            _write_journal(journal, incoming, pending=not self._together)
            # in a thread: the event loop goes on reading and preparing other requests meanwhile,
            # which is worth more than the hop (measured: 5-20 % more documents/s than inline)
            await to_thread.run_sync(self._make_durable, incoming)
            if self._together:
                # the registry shares our database: rows and registration in one transaction
                record = self.access.recording(who, sub) if self.access is not None else None

                def within(conn: Connection) -> None:
                    self._record(conn, incoming, "stored", submitter)
                    if record is not None:
                        record(conn)

                errors = await self._register(sub, within=within)  # type: ignore[call-arg]
            else:
                await write(self.engine, self._record, incoming, "pending", submitter)
                pending_rows = True
                errors = await self._register_remotely(sub, incoming, journal)
        except XdsException:
            await self._undo(incoming, pending_rows, journal)
            raise
        except Exception as exc:
            # a lock held elsewhere would hold the undoing as long again: it waits in the background
            await self._undo(incoming, pending_rows, journal, now=classify(exc) != BUSY)
            return PROVIDE.errors(exc, wrote=True)
        except BaseException:  # cancelled: settled in the background (asking a remote registry)
            self._settle_later(_Unsettled(incoming, "ask" if pending_rows else "discard", journal=journal))
            raise
        if errors is None:  # the remote registry's verdict is unknown: asked again later
            return [_UNANSWERED]
        if any(e.is_error for e in errors):
            await self._undo(incoming, pending_rows, journal)
        elif pending_rows:
            try:
                await write(self.engine, self._confirm, incoming)
            except Exception:  # registered, bytes durable: the row is made stored when it can be
                log.warning("repository %s: confirming later", self.name, exc_info=True)
                self._settle_later(_Unsettled(incoming, "confirm", journal=journal))
        return errors

    async def _register_remotely(
        self, sub: Submission, incoming: list[_Incoming], journal: Path
    ) -> list[XdsError] | None:
        """ITI-42 at the remote registry; None when it may have registered without answering
        (the pending rows then stay until the registry says, asked in the background)."""
        try:
            return await self._register(sub)
        except RegistryUnreachable as exc:  # the request never left: nothing was registered
            log.warning("repository %s: %s", self.name, exc)
            return [XdsError(v.XDSRegistryNotAvailable, f"{exc}; nothing was stored")]
        except Exception as exc:
            log.warning("repository %s: the registry did not answer: %s", self.name, exc)
            self._settle_later(_Unsettled(incoming, "ask", journal=journal))
            return None

    async def _undo(
        self, incoming: list[_Incoming], pending_rows: bool, journal: Path, *, now: bool = True
    ) -> None:
        """Remove what a failed submission brought: its pending rows and bytes no row points to;
        when the database cannot be reached now (or not ``now``), in the background once it can."""
        try:
            if not now:
                raise DatabaseBusy("the database is locked")
            await write(self.engine, self._discard, incoming, pending_rows)
        except Exception:
            log.warning("repository %s: discarding later", self.name, exc_info=True)
            self._settle_later(_Unsettled(incoming, "discard", pending_rows, journal=journal))

    def _settle_later(self, item: _Unsettled) -> None:
        if item.how == "ask" and not item.sure_after:
            item.sure_after = time.monotonic() + self.registry_timeout
        self._unsettled.append(item)
        if item.journal is not None:
            self._kept.add(item.journal)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(self._settle_loop())

    async def _settle_loop(self) -> None:
        """Settle what failed submissions left, retrying (0.25 s, doubling to 5 s) until the
        database (and the registry, for an unanswered registration) answers."""
        pause = 0.25
        while self._unsettled:
            await asyncio.sleep(pause)
            for _ in range(len(self._unsettled)):
                item = self._unsettled.pop(0)
                try:
                    await self._settle(item)
                except Exception as exc:
                    log.info("repository %s: still unsettled (%s)", self.name, exc)
                    self._unsettled.append(item)
                    continue
                if item.journal is not None:
                    self._kept.discard(item.journal)
                    item.journal.unlink(missing_ok=True)
            pause = min(pause * 2, 5.0)

    async def _settle(self, item: _Unsettled) -> None:
        how = item.how
        if how == "ask":
            uids = [i.doc.unique_id or "" for i in item.incoming if i.brought]
            verdicts = [await to_thread.run_sync(self._lookup, uid, self.unique_id) for uid in uids]
            if None in verdicts:
                item.sure_after = time.monotonic() + self.registry_timeout
                raise RuntimeError("the registry cannot tell yet")
            if not all(verdicts) and time.monotonic() < item.sure_after:
                # a registry that was slow or away may still be working through the ITI-42 it
                # was sent: "not registered" counts once it has answered promptly for as long as
                # the registration was waited for — the bytes stay until then
                raise RuntimeError("the registry may still be registering them")
            how = "confirm" if all(verdicts) else "discard"
        if how == "confirm":
            await write(self.engine, self._confirm, item.incoming)
        elif how == "drop":
            await write(self.engine, self._drop_unused, item.sha1s)
        else:
            await write(self.engine, self._discard, item.incoming, item.pending_rows or item.how == "ask")

    def store_size(self) -> tuple[int, int]:
        """(blobs, bytes) this repository's stored rows point to."""
        blobs = select(rd.c.sha1, rd.c.size).where(rd.c.repository_id == self.unique_id).distinct().subquery()
        with self.reader.connect() as conn:
            count, total = conn.execute(select(func.count(), func.coalesce(func.sum(blobs.c.size), 0))).one()
        return int(count), int(total)

    @property
    def unsettled(self) -> int:
        """Failed submissions whose leftovers wait for the database to answer."""
        return len(self._unsettled)

    def _match_documents(
        self, sub: Submission, body: etree._Element, request: SoapRequest
    ) -> list[_Incoming]:
        """Pair each DocumentEntry with its Document; check and set hash, size, repositoryUniqueId."""
        errors: list[XdsError] = []
        documents: dict[str, Attachment] = {}
        for el in body.iterchildren(_X + "Document"):
            doc_id = el.get("id") or ""
            if doc_id in documents:
                errors.append(
                    XdsError(v.XDSRepositoryMetadataError, f"two Document elements with id {doc_id}", doc_id)
                )
                continue
            try:
                documents[doc_id] = inline_or_xop_bytes(el, request.attachments, doc_id)
            except SoapFault as fault:
                errors.append(XdsError(v.XDSMissingDocument, fault.reason, doc_id))
        entries = {d.id: d for d in sub.documents}
        for doc_id in documents.keys() - entries.keys():
            errors.append(
                XdsError(v.XDSMissingDocumentMetadata, f"Document {doc_id} has no DocumentEntry", doc_id)
            )
        incoming: list[_Incoming] = []
        seen_uids: set[str] = set()
        for doc in sub.documents:
            if doc.is_on_demand:
                errors.append(
                    XdsError(
                        v.XDSRepositoryMetadataError, "On-Demand entries are not provided by ITI-41", doc.id
                    )
                )
                continue
            att = documents.get(doc.id)
            if att is None:
                errors.append(
                    XdsError(v.XDSMissingDocument, f"DocumentEntry {doc.id} has no Document", doc.id)
                )
                continue
            uid = doc.unique_id or ""
            if uid in seen_uids:
                errors.append(
                    XdsError(
                        v.XDSRepositoryDuplicateUniqueIdInMessage, f"uniqueId {uid} appears twice", doc.id
                    )
                )
            seen_uids.add(uid)
            sha1, size = att.sha1, att.size
            supplied_hash, supplied_size = doc.hash, doc.size
            if supplied_hash is not None and supplied_hash.lower() != sha1:
                errors.append(
                    XdsError(
                        v.XDSRepositoryMetadataError,
                        f"hash {supplied_hash} does not match the document's SHA-1 {sha1}",
                        doc.id,
                    )
                )
            if supplied_size is not None and supplied_size != str(size):
                errors.append(
                    XdsError(
                        v.XDSRepositoryMetadataError,
                        f"size {supplied_size} does not match the document's {size} bytes",
                        doc.id,
                    )
                )
            repo = doc.repository_unique_id
            if repo is not None and repo != self.unique_id:
                errors.append(
                    XdsError(
                        v.XDSRepositoryMetadataError,
                        f"repositoryUniqueId {repo} is not this repository ({self.unique_id})",
                        doc.id,
                    )
                )
            doc.set_slot("hash", [sha1])
            doc.set_slot("size", [str(size)])
            doc.set_slot("repositoryUniqueId", [self.unique_id])
            incoming.append(_Incoming(doc, att, sha1, size))
        if errors:
            raise XdsException(errors)
        return incoming

    def _make_durable(self, incoming: list[_Incoming]) -> None:
        """Put the bytes in the blob store (fsynced) — file work, done in a worker thread."""
        durable: set[str] = set()
        for item in incoming:
            if item.sha1 in durable:  # the same bytes for two documents (or one part named twice)
                continue
            durable.add(item.sha1)
            att = item.attachment
            if att.path is None or not self.store.put_spooled(att.path, item.sha1):
                with att.open() as fh:
                    self.store.put_chunks(iter(lambda fh=fh: fh.read(1024 * 1024), b""))

    def _record(self, conn: Connection, incoming: list[_Incoming], state: str, submitter: str = "") -> None:
        """Insert a row for each document whose bytes are durable; a resubmission of the same bytes
        keeps its row, other bytes under a stored uniqueId are XDSNonIdenticalHash."""
        now = _now()
        rows = []
        for sha1 in sorted({item.sha1 for item in incoming}):  # one order everywhere: no deadlock
            _lock_blob(conn, sha1)
        for item in incoming:  # may run again after a rollback: each time from what is stored
            item.resubmitted = False
        for item in incoming:
            uid = item.doc.unique_id or ""
            stored_sha1 = _SHA1_OF.scalar(conn, {"repository": self.unique_id, "uid": uid})
            if stored_sha1 is not None:
                if stored_sha1 != item.sha1:
                    raise XdsException.of(
                        v.XDSNonIdenticalHash,
                        f"document {uid} is stored here with another hash ({stored_sha1})",
                        item.doc.id,
                    )
                item.resubmitted = True  # bytes already stored: nothing to undo
                continue
            if not self.store.exists(item.sha1):
                # the same bytes, sent at the same moment by a submission that failed, were removed
                # with it after this one found them stored
                raise XdsException.of(
                    v.XDSRepositoryError,
                    f"the bytes of document {uid} were removed while it was being stored; send it again",
                    item.doc.id,
                )
            rows.append(
                {
                    "repository_id": self.unique_id,
                    "unique_id": uid,
                    "sha1": item.sha1,
                    "size": item.size,
                    "mime_type": item.doc.mime_type or "application/octet-stream",
                    "state": state,
                    "created": now,
                    "patient_id": item.doc.patient_id or "",
                    "class_code": _coded(item.doc, v.DE_CLASS_CODE),
                    "confidentiality": "\n".join(
                        c.as_query_value() for c in item.doc.codes(v.DE_CONFIDENTIALITY_CODE)
                    ),
                    "submitter": submitter,
                }
            )
        _INSERT_ROW.execute_many(conn, rows)

    def _confirm(self, conn: Connection, incoming: list[_Incoming]) -> None:
        uids = [i.doc.unique_id or "" for i in incoming if i.brought]
        if uids:
            conn.execute(
                update(rd)
                .where(rd.c.repository_id == self.unique_id, rd.c.unique_id.in_(uids))
                .values(state="stored")
            )

    def _discard(self, conn: Connection, incoming: list[_Incoming], pending_rows: bool) -> None:
        """After a refused registration: remove this submission's pending rows (if it wrote any) and
        the bytes it brought that no row points to."""
        uids = [i.doc.unique_id or "" for i in incoming if i.brought]
        if uids and pending_rows:
            conn.execute(
                delete(rd).where(
                    rd.c.repository_id == self.unique_id,
                    rd.c.unique_id.in_(uids),
                    rd.c.state == "pending",
                )
            )
        for sha1 in sorted({i.brought for i in incoming if i.brought}):
            _lock_blob(conn, sha1)
            self._delete_blob_if_unused(conn, sha1)

    def _delete_blob_if_unused(self, conn: Connection, sha1: str) -> bool:
        used = conn.execute(select(func.count()).select_from(rd).where(rd.c.sha1 == sha1)).scalar_one()
        if not used and self.store.exists(sha1):
            self.store.delete(sha1)
            return True
        return False

    # ---------------------------------------------------------------------------------------------
    # ITI-43
    # ---------------------------------------------------------------------------------------------
    async def retrieve(self, request: SoapRequest) -> SoapResponse:
        """ITI-43 Retrieve Document Set (ITI TF-2 §3.43.4.2.3)."""
        body = request.body
        if body.tag != _X + "RetrieveDocumentSetRequest":
            raise SoapFault("Sender", f"expected RetrieveDocumentSetRequest, got {body.tag}")
        wanted = _document_requests(body)
        if not wanted:
            raise SoapFault("Sender", "RetrieveDocumentSetRequest has no DocumentRequest")
        uids = [uid for repo, uid, _ in wanted if repo == self.unique_id]
        rows = await run_blocking(self.stored_rows, uids)
        refused = await self._refused(request, uids, READ)
        errors: list[XdsError] = []
        parts: list[str] = []
        attachments: list[Attachment] = []
        for repo, uid, home in wanted:
            if repo != self.unique_id:
                errors.append(
                    XdsError(v.XDSUnknownRepositoryId, f"repository {repo} is not this repository", repo)
                )
                continue
            row = rows.get(uid)
            if row is None or not self.store.exists(row.sha1):
                errors.append(
                    XdsError(v.XDSDocumentUniqueIdError, f"document {uid} is not in this repository", uid)
                )
                continue
            if uid in refused:
                errors.append(XdsError(v.XDSDocumentUniqueIdError, f"document {uid}: {refused[uid]}", uid))
                continue
            cid = f"doc{len(attachments)}.{uuid.uuid4().hex}@xds"
            path = str(self.store.path(row.sha1))
            attachments.append(Attachment(cid, row.mime_type, path=path, size=row.size, sha1=row.sha1))
            home_el = f"<xdsb:HomeCommunityId>{_esc(home)}</xdsb:HomeCommunityId>" if home else ""
            parts.append(
                f"<xdsb:DocumentResponse>{home_el}"
                f"<xdsb:RepositoryUniqueId>{_esc(self.unique_id)}</xdsb:RepositoryUniqueId>"
                f"<xdsb:DocumentUniqueId>{_esc(uid)}</xdsb:DocumentUniqueId>"
                f"<xdsb:mimeType>{_esc(row.mime_type)}</xdsb:mimeType>"
                f'<xdsb:Document><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cid}"/></xdsb:Document>'
                f"</xdsb:DocumentResponse>"
            )
        status = response_status(errors, partial=bool(attachments))
        rr = registry_response(errors, status=status)
        body_bytes = (
            f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{v.NS_XDSB}">'.encode()
            + rr
            + "".join(parts).encode()
            + b"</xdsb:RetrieveDocumentSetResponse>"
        )
        return SoapResponse(v.ACTION_RETRIEVE_RESPONSE, body_bytes, attachments=attachments)

    def stored_rows(self, uids: list[str]) -> dict[str, StoredRow]:
        """The stored rows of ``uids`` (one indexed lookup each, straight on the driver)."""
        out: dict[str, StoredRow] = {}
        for uid in dict.fromkeys(uids):
            for row in self.quick.rows(
                _STORED_ROW, {"repository": self.unique_id, "uid": uid, "state": "stored"}
            ):
                out[uid] = StoredRow(*row)
        return out

    # ---------------------------------------------------------------------------------------------
    # ITI-86
    # ---------------------------------------------------------------------------------------------
    async def remove(self, request: SoapRequest) -> SoapResponse:
        """ITI-86 Remove Documents (ITI TF-2 §3.86.4.1.3): the bytes of the named documents go."""
        body = request.body
        if body.tag != "{" + NS_RMD + "}RemoveDocumentsRequest":
            raise SoapFault("Sender", f"expected rmd:RemoveDocumentsRequest, got {body.tag}")
        wanted = _document_requests(body)
        refused = await self._refused(
            request, [uid for repo, uid, _ in wanted if repo == self.unique_id], REMOVE
        )
        errors = [
            XdsError(v.XDSDocumentUniqueIdError, f"document {uid}: {refused[uid]}", uid)
            for repo, uid, _ in wanted
            if repo == self.unique_id and uid in refused
        ]
        allowed = [w for w in wanted if w[1] not in refused or w[0] != self.unique_id]
        removed_errors, freed = await write(self.engine, self._remove, allowed)
        errors += removed_errors
        if freed:  # the bytes no other document shares go once the rows are gone for good
            try:
                await write(self.engine, self._drop_unused, freed)
            except Exception:
                log.warning("repository %s: removing bytes later", self.name, exc_info=True)
                self._settle_later(_Unsettled([], "drop", sha1s=freed))
        removed_any = len(errors) < len(wanted)
        status = response_status(errors, partial=removed_any)
        return SoapResponse(v.ACTION_REMOVE_DOCUMENTS_RESPONSE, registry_response(errors, status=status))

    def _remove(
        self, conn: Connection, wanted: list[tuple[str, str, str]]
    ) -> tuple[list[XdsError], list[str]]:
        """Delete the rows of ``wanted``; (errors, the SHA-1s of their bytes)."""
        errors: list[XdsError] = []
        freed: set[str] = set()
        for repo, uid, _ in wanted:
            if repo != self.unique_id:
                errors.append(
                    XdsError(v.XDSUnknownRepositoryId, f"repository {repo} is not this repository", repo)
                )
                continue
            row = conn.execute(
                select(rd.c.sha1).where(rd.c.repository_id == self.unique_id, rd.c.unique_id == uid)
            ).first()
            if row is None:
                errors.append(
                    XdsError(v.XDSDocumentUniqueIdError, f"document {uid} is not in this repository", uid)
                )
                continue
            conn.execute(delete(rd).where(rd.c.repository_id == self.unique_id, rd.c.unique_id == uid))
            freed.add(row.sha1)
        return errors, sorted(freed)

    def _drop_unused(self, conn: Connection, sha1s: list[str]) -> None:
        for sha1 in sha1s:
            _lock_blob(conn, sha1)
            self._delete_blob_if_unused(conn, sha1)

    # ---------------------------------------------------------------------------------------------
    # authorisation
    # ---------------------------------------------------------------------------------------------
    async def _refused(self, request: SoapRequest, uids: list[str], action: str) -> dict[str, str]:
        """The documents among ``uids`` the verified requester may not ``action``, with the refusal
        in words (naming the rule); nothing without a verified requester."""
        who = self.access.requester(request.security) if self.access is not None else None
        if who is None or not uids:
            return {}
        decisions = await run_blocking(self._decide, who, uids, action)
        return {uid: d.explain() for uid, d in decisions.items() if not d}

    def _decide(self, who: Requester, uids: list[str], action: str) -> dict[str, Decision]:
        """The policy's decision on each stored document of ``uids``, on the facts recorded with its
        row (or, for rows recorded before facts were kept, the registry's entry)."""
        assert self.access is not None
        access = self.access
        facts: dict[str, ObjectFacts] = {}
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(
                    rd.c.unique_id, rd.c.patient_id, rd.c.class_code, rd.c.confidentiality, rd.c.submitter
                ).where(rd.c.repository_id == self.unique_id, rd.c.unique_id.in_(sorted(set(uids))))
            ).all()
            for r in rows:
                if r.patient_id:
                    facts[r.unique_id] = ObjectFacts(
                        DOCUMENT,
                        access.survivor(r.patient_id, conn),
                        r.class_code or "",
                        tuple((r.confidentiality or "").split("\n")) if r.confidentiality else (),
                        frozenset(o for o in (r.submitter, self.owner) if o),
                    )
        earlier = [r.unique_id for r in rows if not r.patient_id]
        for uid, found in access.document_facts(self.unique_id, earlier).items():
            facts[uid] = ObjectFacts(
                found.kind,
                found.patient,
                found.class_code,
                found.confidentiality,
                found.owners | ({self.owner} if self.owner else set()),
            )
        decisions = {uid: access.policy.decide(who, f, action) for uid, f in facts.items()}
        for uid in {r.unique_id for r in rows} - facts.keys():
            decisions[uid] = access.policy.decide(who, ObjectFacts(DOCUMENT, ""), action)
        for uid, decision in decisions.items():
            if decision.mark:
                log_decision(decision, who.attributes, f"document {uid}")
        return decisions

    # ---------------------------------------------------------------------------------------------
    # recovery
    # ---------------------------------------------------------------------------------------------
    def recover_peers(self) -> dict[str, int]:
        """What a worker process that died alone (uvicorn restarts it) left: its temporary
        directory, its spooled parts, the pending rows and blobs of its submissions in flight.
        Runs in the worker that starts, while the others go on serving."""
        counts = {"tmp": 0, "confirmed": 0, "discarded": 0, "orphans": 0, "undecided": 0}
        for directory in self.store.orphaned_spools():
            undecided = False
            for journal in sorted(directory.glob("*.inflight")):
                blobs, pending = _read_journal(journal)
                verdicts = {uid: self._lookup(uid, self.unique_id) for uid in pending}
                if None in verdicts.values():
                    undecided = True
                    counts["undecided"] += 1
                    continue
                with write_transaction(self.engine) as conn:
                    for uid, known in verdicts.items():
                        self._settle_pending(conn, uid, bool(known), counts)
                    for sha1 in sorted(blobs):
                        _lock_blob(conn, sha1)
                        if self._delete_blob_if_unused(conn, sha1):
                            counts["orphans"] += 1
                journal.unlink()
            if undecided:  # its journals wait for the next worker (or a full restart)
                for path in directory.iterdir():
                    if path.suffix != ".inflight":
                        path.unlink(missing_ok=True)
                        counts["tmp"] += 1
            else:
                counts["tmp"] += self.store.remove_spool(directory)
        if any(counts.values()):
            log.info("repository %s: settled what a worker that died left: %s", self.name, counts)
        return counts

    def _settle_pending(self, conn: Connection, uid: str, registered: bool, counts: dict[str, int]) -> None:
        where = (rd.c.repository_id == self.unique_id) & (rd.c.unique_id == uid) & (rd.c.state == "pending")
        if registered:
            counts["confirmed"] += conn.execute(update(rd).where(where).values(state="stored")).rowcount
        else:
            counts["discarded"] += conn.execute(delete(rd).where(where)).rowcount

    def recover(self) -> dict[str, int]:
        """Settle what a crash left behind: pending rows, temporary files, unreferenced blobs."""
        counts = {"confirmed": 0, "discarded": 0, "undecided": 0, "orphans": 0}
        counts["tmp"] = self.store.clear_tmp()
        with self.reader.connect() as conn:
            pending = (
                conn.execute(
                    select(rd.c.unique_id).where(
                        rd.c.repository_id == self.unique_id, rd.c.state == "pending"
                    )
                )
                .scalars()
                .all()
            )
        verdicts = {uid: self._lookup(uid, self.unique_id) for uid in pending}
        with self.engine.begin() as conn:
            for uid, known in verdicts.items():
                where = (
                    (rd.c.repository_id == self.unique_id)
                    & (rd.c.unique_id == uid)
                    & (rd.c.state == "pending")
                )
                if known is True:
                    conn.execute(update(rd).where(where).values(state="stored"))
                    counts["confirmed"] += 1
                elif known is False:
                    conn.execute(delete(rd).where(where))
                    counts["discarded"] += 1
                else:
                    counts["undecided"] += 1
            referenced = set(conn.execute(select(rd.c.sha1).distinct()).scalars())
        for sha1 in self.store.all_blobs():
            if sha1 not in referenced:
                self.store.delete(sha1)
                counts["orphans"] += 1
        if any(counts.values()):
            log.info("repository %s recovered: %s", self.name, counts)
        return counts


def _write_journal(path: Path, incoming: list[_Incoming], *, pending: bool) -> None:
    """Note (without fsync: it is for a worker that dies, not for a machine that does) the blobs
    a submission is about to install and, with a remote registry, the rows it writes pending."""
    lines = [f"blob {i.sha1}\n" for i in incoming]
    if pending:
        lines += [f"pending {i.doc.unique_id or ''}\n" for i in incoming]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
    finally:
        os.close(fd)


def _read_journal(path: Path) -> tuple[set[str], set[str]]:
    """(blobs, pending uniqueIds) a journal names."""
    blobs: set[str] = set()
    pending: set[str] = set()
    for line in path.read_text().splitlines():
        kind, _, value = line.partition(" ")
        (blobs if kind == "blob" else pending).add(value)
    return blobs, pending


_SHA1_OF = Prepared(
    select(rd.c.sha1).where(rd.c.repository_id == bindparam("repository"), rd.c.unique_id == bindparam("uid"))
)
_INSERT_ROW = Prepared(
    insert(rd),
    [
        "repository_id",
        "unique_id",
        "sha1",
        "size",
        "mime_type",
        "state",
        "created",
        "patient_id",
        "class_code",
        "confidentiality",
        "submitter",
    ],
)


def _coded(doc: DocumentEntry, scheme: str) -> str:
    found = doc.code(scheme)
    return found.as_query_value() if found is not None else ""


def _lock_blob(conn: Connection, sha1: str) -> None:
    """Serialise, per blob, recording a document against removing its bytes after a failure.

    On SQLite every writer already holds the database's one write lock; on PostgreSQL a
    transaction-scoped advisory lock keyed by the SHA-1 does it.
    """
    if conn.dialect.name == "postgresql" and sha1:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": int(sha1[:15], 16)})


class StoredRow(NamedTuple):
    sha1: str
    size: int
    mime_type: str


_STORED_ROW = Prepared(
    select(rd.c.sha1, rd.c.size, rd.c.mime_type).where(
        rd.c.repository_id == bindparam("repository"),
        rd.c.unique_id == bindparam("uid"),
        rd.c.state == bindparam("state"),
    )
)


def _document_requests(body: etree._Element) -> list[tuple[str, str, str]]:
    """(repositoryUniqueId, documentUniqueId, homeCommunityId) of each DocumentRequest."""
    out = []
    for req in body.iter(_X + "DocumentRequest"):
        out.append(
            (
                (req.findtext(_X + "RepositoryUniqueId") or "").strip(),
                (req.findtext(_X + "DocumentUniqueId") or "").strip(),
                (req.findtext(_X + "HomeCommunityId") or "").strip(),
            )
        )
    return out


def _retrieve_failure(errors: list[XdsError]) -> bytes:
    """An ITI-43 answer carrying only ``errors`` (ITI TF-2 §3.43.4.2.3)."""
    return (
        f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{v.NS_XDSB}">'.encode()
        + registry_response(errors)
        + b"</xdsb:RetrieveDocumentSetResponse>"
    )


_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _esc(value: str) -> str:
    return value.translate(_ESC)


def persistent_unique_id(store_dir: str | Path) -> str:
    """A repository uniqueId made once (a 2.25 UUID OID, ITU-T X.667) and kept in the store."""
    path = Path(store_dir) / "repository-unique-id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    oid = f"2.25.{uuid.uuid4().int}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(oid + "\n")
    os.replace(tmp, path)
    return oid
