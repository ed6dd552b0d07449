"""ITI-18 Registry Stored Query and ITI-51 Multi-Patient Stored Query: the Document Registry's side.

ITI TF-2 §3.18.4.1.3 (expected actions) and §3.51.4.1.3: the registry finds the objects a stored
query selects (§3.18.4.1.2.3.7.1-14, §3.51.4.1.2.3) with SQL over the indexed columns and side
tables of ``xds.registry.schema`` (built once per query shape, see ``xds.registry.selection``), and answers
with a ``query:AdhocQueryResponse`` (ebRS 3.0 §6.3) assembled by concatenating the canonical ebRIM fragments stored beside each row (LeafClass) or
``rim:ObjectRef`` elements (ObjectRef). Nothing is parsed or re-serialised on the way out.

Rules applied to every answer (§3.18.4.1.3):

- a LeafClass answer of an ITI-18 query whose objects belong to more than one patient is refused
  with XDSResultNotSinglePatient (identifiers merged by ITI-8 count as one patient); ObjectRef
  answers and ITI-51 queries may span patients;
- more objects than the configured maximum is XDSTooManyResults;
- a patient identifier subsumed by an ITI-8 merge finds what was filed under the surviving
  identifier, and the survivor finds what was filed under identifiers merged into it;
- when the registry has a homeCommunityId, every returned object carries it as its ``home``
  attribute (ITI TF-2 §3.18.4.1.2.3.8, use of homeCommunityId);
- ``returnComposedObjects`` is accepted either way: an XDS object's metadata *is* its composed
  classifications and identifiers (ITI TF-3 §4.2.3), so LeafClass answers always carry them.

Time parameters compare the 14-digit forms of HL7 DTMs (:func:`xds.metadata.hl7v2.dtm_key`):
``From`` is inclusive, ``To`` exclusive (§3.18.4.1.2.3.7.1). Author person patterns use ``%`` and
``_`` as SQL LIKE does, matched case-sensitively on both backends (§3.18.4.1.2.3.3, wildcards). With
$XDSDocumentEntryType absent only stable entries are returned (§3.18.4.1.2.3.7.1, On-Demand).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from xds.database import QuickReads, reader
from xds.database.statements import Prepared
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.hl7v2 import dtm_key
from xds.metadata.registry_response import error_list_xml, response_status
from xds.registry import query_params as q
from xds.registry import schema as t
from xds.registry.patients import PatientDirectory, canonical_cx
from xds.registry.selection import Selections, Where

log = logging.getLogger("xds.registry.query")

DEFAULT_MAX_RESULTS = 10_000
# Values bound in one IN list at most (SQLite's and PostgreSQL's bind-parameter limits are far above).
_CHUNK = 1000

DOCUMENT = "document"
SUBMISSION_SET = "submissionset"
FOLDER = "folder"
ASSOCIATION = "association"

# the access policy's filter over the selected objects (xds.registry.access.RegistryAccess.release)
Release = Callable[[list["Hit"]], list["Hit"]]

_RIM_DECL = f' xmlns:rim="{v.NS_RIM}"'.encode()
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


@dataclass(slots=True)
class Hit:
    """One object of an answer: its kind, entryUUID, patient (None for associations) and fragment."""

    kind: str
    uuid: str
    patient_id: str | None
    xml: bytes | None
    seq: int = 0


@dataclass(slots=True)
class _Link:
    """An association row as the content queries reason about it."""

    uuid: str
    type: str
    source: str
    target: str
    xml: bytes | None
    seq: int

    def hit(self) -> Hit:
        return Hit(ASSOCIATION, self.uuid, None, self.xml, self.seq)


class StoredQueryEngine:
    """The stored queries of one registry database (ITI TF-2 §3.18, §3.51)."""

    def __init__(
        self,
        engine: Engine,
        patients: PatientDirectory,
        *,
        home_community_id: str = "",
        max_results: int = DEFAULT_MAX_RESULTS,
        time_limit: float = 0.0,
    ) -> None:
        self.engine = reader(engine)
        self.patients = patients
        self.home = home_community_id
        self.max_results = max_results
        self._home_attr = f' home="{home_community_id.translate(_ATTR_ESCAPES)}"'.encode()
        self.selections = Selections()
        self.reads = QuickReads(self.engine, time_limit=time_limit)
        self.dialect = self.engine.dialect

    # --- the transaction ----------------------------------------------------------------------------
    def answer(self, request: etree._Element, release: Release | None = None) -> bytes:
        """The ``query:AdhocQueryResponse`` for ``request`` — Success, or Failure with its errors.

        ``release`` (the access policy, ``xds.registry.access``) keeps of the selected objects
        those the requester may see; it runs after selection, before the single-patient check."""
        try:
            req = q.parse_query_request(request)
            hits = self.run(req, release)
        except XdsException as exc:
            return query_response(exc.errors)
        return self.render(req, hits)

    def run(self, req: q.QueryRequest, release: Release | None = None) -> list[Hit]:
        """The objects ``req`` selects (and ``release`` keeps), checked for patient count and size
        (ITI TF-2 §3.18.4.1.3)."""
        hits = self._selected(req)
        if release is not None:
            hits = release(hits)
        if req.leaf_class and not req.query.multi_patient:
            self._check_single_patient(hits)
        return hits

    def _selected(self, req: q.QueryRequest) -> list[Hit]:
        try:
            return self._read(req)
        except DBAPIError as exc:
            if self.reads.interrupted(exc):
                raise XdsException.of(
                    v.XDSRegistryError,
                    f"the query ran longer than {self.reads.time_limit:g} s and was stopped; "
                    "narrow it (fewer patients, codes or author patterns, or a time range)",
                ) from None
            if not self.reads.lost(exc):
                raise
            log.warning("the database connection was lost during a query; asking again on a new one")
            return self._read(req)

    def _read(self, req: q.QueryRequest) -> list[Hit]:
        ctx = _Context(None, self.dialect, req, self.patients, self.max_results, self.selections)
        if req.query.id in _ONE_TABLE:
            # nothing returned is joined across statements: each statement may see its own
            # snapshot, so no transaction (no BEGIN, no COMMIT)
            with self.reads.connection() as ctx.dbapi:
                return self._run(ctx)
        # a content query's statements all see one snapshot
        with self.reads.snapshot() as ctx.dbapi:
            return self._run(ctx)

    def _run(self, ctx: _Context) -> list[Hit]:
        req = ctx.req
        hits = _HANDLERS[req.query.id](ctx)
        if len(hits) > self.max_results:
            raise _too_many(self.max_results)
        return hits

    def _check_single_patient(self, hits: list[Hit]) -> None:
        """XDSResultNotSinglePatient when a LeafClass answer spans patients (ITI TF-2 §3.18.4.1.3)."""
        pids = {h.patient_id for h in hits if h.patient_id is not None}
        if len(pids) < 2:
            return
        with self.reads.connection() as dbapi:
            survivors = {self.patients.resolve_on(dbapi, self.dialect, pid) or pid for pid in pids}
        if len(survivors) > 1:
            raise XdsException.of(
                v.XDSResultNotSinglePatient,
                f"the LeafClass answer would hold objects of {len(survivors)} patients; "
                "ask for ObjectRef or query one patient at a time",
            )

    # --- the answer ---------------------------------------------------------------------------------
    def render(self, req: q.QueryRequest, hits: list[Hit]) -> bytes:
        """The AdhocQueryResponse: stored fragments (LeafClass) or ObjectRefs, concatenated."""
        parts = [_response_head(response_status(req.warnings))]
        if req.warnings:
            parts.append(error_list_xml(req.warnings).encode())
        parts.append(b"<rim:RegistryObjectList" + _RIM_DECL + b">")
        if req.leaf_class:
            home = self._home_attr if self.home else None
            for h in hits:
                assert h.xml is not None
                parts.append(with_home(h.xml, home) if home else h.xml)
        else:
            home = self._home_attr if self.home else b""
            for h in hits:
                parts.append(b'<rim:ObjectRef id="' + _attr(h.uuid) + b'"' + home + b"/>")
        parts.append(b"</rim:RegistryObjectList></query:AdhocQueryResponse>")
        return b"".join(parts)


def query_response(errors: list[XdsError]) -> bytes:
    """An AdhocQueryResponse carrying ``errors`` and an empty object list (ebRS 3.0 §6.3)."""
    return (
        _response_head(response_status(errors))
        + error_list_xml(errors).encode()
        + b"<rim:RegistryObjectList"
        + _RIM_DECL
        + b"/></query:AdhocQueryResponse>"
    )


def _response_head(status: str) -> bytes:
    return (
        f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" xmlns:rs="{v.NS_RS}" status="{status}">'
    ).encode()


def _attr(value: str) -> bytes:
    return value.translate(_ATTR_ESCAPES).encode()


def with_home(fragment: bytes, home_attr: bytes) -> bytes:
    """``fragment`` with its top element's ``home`` attribute set to ``home_attr`` (` home="..."`).

    Stored fragments are written by :func:`xds.metadata.ebrim.to_bytes`: attribute values are
    escaped, so the first ``>`` closes the start tag and ``home="`` cannot occur inside a value.
    """
    end = fragment.index(b">")
    start = fragment.find(b' home="', 0, end)
    if start >= 0:
        close = fragment.index(b'"', start + 7)
        return fragment[:start] + home_attr + fragment[close + 1 :]
    at = fragment.index(b" id=", 0, end)
    return fragment[:at] + home_attr + fragment[at:]


def _too_many(limit: int) -> XdsException:
    return XdsException.of(
        v.XDSTooManyResults,
        f"the query selects more than {limit} objects, the most this registry returns; narrow it",
    )


# ------------------------------------------------------------------------------------------------
# query context: the connection, the parameters and the shared selections
# ------------------------------------------------------------------------------------------------
_OBJECT = ("seq", "uuid", "patient_id")
_OBJECT_XML = (*_OBJECT, "xml")
_LINK = ("seq", "uuid", "type", "source", "target")
_LINK_XML = (*_LINK, "xml")

_merged_into = Prepared(select(t.patients.c.pid).where(t.patients.c.merged_into == bindparam("survivor")))


@dataclass
class _Context:
    dbapi: Any  # the DB-API connection every statement of the query runs on
    dialect: Dialect
    req: q.QueryRequest
    patients: PatientDirectory
    max_results: int
    selections: Selections
    _patient_cache: dict[str, list[str]] = field(default_factory=dict)

    @property
    def p(self) -> q.Params:
        return self.req.params

    @property
    def leaf(self) -> bool:
        return self.req.leaf_class

    @property
    def sqlite(self) -> bool:
        return self.dialect.name == "sqlite"

    def defines(self, name: str) -> bool:
        return name in self.req.query.params

    # --- patients ----------------------------------------------------------------------------------
    def patient_ids(self, pid: str) -> list[str]:
        """Every identifier filed objects of ``pid``'s patient may carry (ITI-8 merges followed)."""
        cached = self._patient_cache.get(pid)
        if cached is not None:
            return cached
        ids = {pid}
        try:
            ids.add(canonical_cx(pid))
        except ValueError:
            pass
        survivor = self.patients.resolve_on(self.dbapi, self.dialect, pid)
        if survivor is not None:
            ids.add(survivor)
            ids.update(
                row[0] for row in _merged_into.rows_on(self.dbapi, self.dialect, {"survivor": survivor})
            )
        result = sorted(ids)
        self._patient_cache[pid] = result
        return result

    def patients_in(self, where: Where, column: str, name: str, *, single: bool) -> Where:
        """``where`` and: ``column`` holds one of the identifiers of the patient(s) in parameter ``name``."""
        if single and not self.sqlite:
            # a database server follows the merges inside the same statement: one round trip
            # fewer. (SQLite is in process: there a lookup costs less than the statement's union,
            # and one identifier keeps the index in seq order, with nothing to sort.)
            given = self.p.one(name) or ""
            try:
                canonical = canonical_cx(given)
            except ValueError:  # no canonical form: no merges to follow, only what was filed so
                return where.one_of(column, [given])
            return where.patient(column, given, canonical)
        pids = [self.p.one(name) or ""] if single else self.p.any(name)
        return where.one_of(column, sorted({i for pid in pids for i in self.patient_ids(pid)}))

    # --- fetching ----------------------------------------------------------------------------------
    def select(
        self, table: Table, where: Where, *, ordered: bool = True, kind_of: str | None = None
    ) -> list[Any]:
        """Rows of ``table`` (seq, uuid, patient_id[, xml] — or an association's columns) meeting
        ``where``; XDSTooManyResults when there are more than the registry returns. ``kind_of``:
        see :meth:`xds.registry.selection.Selections.rows`."""
        if table is t.associations:
            columns = _LINK_XML if self.leaf else _LINK
        else:
            columns = _OBJECT_XML if self.leaf else _OBJECT
        rows = self.selections.rows(
            self.dbapi,
            self.dialect,
            table,
            columns,
            where,
            limit=self.max_results + 1,
            ordered=ordered,
            kind_of=kind_of,
        )
        if len(rows) > self.max_results:
            raise _too_many(self.max_results)
        return rows

    def select_in(
        self,
        table: Table,
        build: Callable[[list[str]], Where],
        values: Iterable[str],
        *,
        kind_of: str | None = None,
    ) -> list[Any]:
        """Rows of ``table`` meeting ``build(chunk)`` over ``values`` in chunks of bounded size,
        in ``seq`` order, each once."""
        distinct = sorted(set(values))
        rows: dict[int, Any] = {}
        for i in range(0, len(distinct), _CHUNK):
            for row in self.select(table, build(distinct[i : i + _CHUNK]), ordered=False, kind_of=kind_of):
                rows.setdefault(row[0], row)
            if len(rows) > self.max_results:
                raise _too_many(self.max_results)
        return [rows[k] for k in sorted(rows)]

    def objects(self, kind: str, rows: Sequence[Any]) -> list[Hit]:
        """Hits of rows of a document, submission set or folder selection."""
        if self.leaf:
            return [Hit(kind, uuid, pid, xml, seq) for seq, uuid, pid, xml in rows]
        return [Hit(kind, uuid, pid, None, seq) for seq, uuid, pid in rows]

    def links(self, rows: Sequence[Any]) -> list[_Link]:
        """Links of rows of an association selection."""
        if self.leaf:
            return [
                _Link(uuid, kind, source, target, xml, seq) for seq, uuid, kind, source, target, xml in rows
            ]
        return [_Link(uuid, kind, source, target, None, seq) for seq, uuid, kind, source, target in rows]

    # --- versions (ITI TF-2 §3.18.4.1.2.3.5.1, Metadata Update) -------------------------------------
    def latest_only(self, where: Where, statuses: Sequence[str] | None = None) -> Where:
        """``where`` and, at ``$MetadataLevel`` 1, only the newest version of each logical entry.

        At level 2 every version a query selects is returned. Earlier versions are always
        Deprecated (ITI-57 deprecates a version when it makes the next), so a selection of Approved
        objects alone needs no condition: its SQL stays what it was before versions existed.
        """
        if self.req.metadata_level >= 2:
            return where
        if statuses is not None and all(s == v.STATUS_APPROVED for s in statuses):
            return where
        return where.one_of("latest", [1])

    # --- statuses of associations (ITI TF-2 §3.18.4.1.2.3.5.1) ---------------------------------------
    def association_status(self, where: Where) -> Where:
        """``where`` and the association statuses the request asks for."""
        statuses = self.p.any(q.ASSOCIATION_STATUS)
        if statuses:
            return where.one_of("status", statuses)
        if self.req.metadata_level == 1:
            # $MetadataLevel 1 hides Deprecated associations (ITI TF-2 §3.18.4.1.2.3.5.1.1)
            return where.one_of("status", [v.STATUS_APPROVED])
        return where


# ------------------------------------------------------------------------------------------------
# selections of each kind of object
# ------------------------------------------------------------------------------------------------
def _time_range(ctx: _Context, where: Where, column: str, low: str, high: str) -> Where:
    start, end = ctx.p.one(low), ctx.p.one(high)
    if start:
        where.at_least(column, dtm_key(start))
    if end:
        where.below(column, dtm_key(end))
    return where


_DOC_CODE_COLUMNS = (
    (q.DE_CLASS_CODE, "class_code"),
    (q.DE_TYPE_CODE, "type_code"),
    (q.DE_PRACTICE_SETTING_CODE, "practice_setting_code"),
    (q.DE_FACILITY_CODE, "facility_type_code"),
    (q.DE_FORMAT_CODE, "format_code"),
)
_DOC_TIMES = (
    ("creation_time", q.DE_CREATION_TIME_FROM, q.DE_CREATION_TIME_TO),
    ("service_start_time", q.DE_SERVICE_START_FROM, q.DE_SERVICE_START_TO),
    ("service_stop_time", q.DE_SERVICE_STOP_FROM, q.DE_SERVICE_STOP_TO),
)


def document_conditions(ctx: _Context, where: Where) -> Where:
    """``where`` and the DocumentEntry filters of ITI TF-2 §3.18.4.1.2.3.7.1 that the query defines
    and the request gives."""
    p = ctx.p
    for name, column in _DOC_CODE_COLUMNS:
        if p.has(name):
            where.one_of(column, p.any(name))
    for column, low, high in _DOC_TIMES:
        _time_range(ctx, where, column, low, high)
    for group in p.groups(q.DE_EVENT_CODE):
        where.document_code("event", group)
    for group in p.groups(q.DE_CONFIDENTIALITY_CODE):
        where.document_code("conf", group)
    for group in p.groups(q.DE_REFERENCE_ID):
        where.document_code("refid", group)
    if p.has(q.DE_AUTHOR_PERSON):
        where.document_author(p.any(q.DE_AUTHOR_PERSON), sqlite=ctx.sqlite)
    if p.has(q.DE_STATUS):
        where.one_of("status", p.any(q.DE_STATUS))
    if ctx.defines(q.DE_TYPE):
        where.one_of("object_type", p.any(q.DE_TYPE) or [v.DOC_ENTRY_STABLE])
    if p.has(q.DE_AVAILABILITY):
        # Online, Offline or both (ITI TF-2 §3.18.4.1.2.3.7.1); ITI-57 takes an entry offline
        where.one_of("availability", sorted(set(p.any(q.DE_AVAILABILITY))))
    return where


def _documents_by_ids(ctx: _Context, column: str, ids: Iterable[str], *, filtered: bool) -> list[Hit]:
    def build(chunk: list[str]) -> Where:
        where = Where().one_of(column, chunk)
        if column == "unique_id":  # the versions of an entry share its uniqueId
            ctx.latest_only(where)
        return document_conditions(ctx, where) if filtered else where

    return ctx.objects(DOCUMENT, ctx.select_in(t.documents, build, ids))


def _associations_touching(
    ctx: _Context, ids: Iterable[str], types: Sequence[str] | None = None
) -> list[_Link]:
    """Associations whose source or target is one of ``ids`` (and whose type is in ``types``)."""

    def build(chunk: list[str]) -> Where:
        where = ctx.association_status(Where()).either("source", "target", chunk)
        return where if types is None else where.one_of("type", types)

    return ctx.links(ctx.select_in(t.associations, build, ids))


def _documents_named(ctx: _Context) -> list[Hit]:
    """The entries a Get* query names by entryUUID (that version), uniqueId (the newest version, or
    every version at ``$MetadataLevel`` 2) or logicalID (every version: the entry's history)."""
    p = ctx.p
    for name, column in ((q.DE_ENTRY_UUID, "uuid"), (q.DE_UNIQUE_ID, "unique_id"), (q.DE_LOGICAL_ID, "lid")):
        if p.has(name):
            return _documents_by_ids(ctx, column, p.any(name), filtered=False)
    return []


def _folders_named(ctx: _Context) -> list[Hit]:
    p = ctx.p
    for name, column in (
        (q.FOLDER_ENTRY_UUID, "uuid"),
        (q.FOLDER_UNIQUE_ID, "unique_id"),
        (q.FOLDER_LOGICAL_ID, "lid"),
    ):
        if p.has(name):

            def build(chunk: list[str], column: str = column) -> Where:
                where = Where().one_of(column, chunk)
                return ctx.latest_only(where) if column == "unique_id" else where

            return ctx.objects(FOLDER, ctx.select_in(t.folders, build, p.any(name)))
    return []


def _with_uuid(chunk: list[str]) -> Where:
    return Where().one_of("uuid", chunk)


def _named(ctx: _Context, entry_uuid: str, unique_id: str, *, versioned: bool = True) -> Where:
    """The object a single-object query names: by entryUUID when it is given, else by uniqueId
    (of a versioned object: its newest version, or every version at ``$MetadataLevel`` 2)."""
    p = ctx.p
    if p.has(entry_uuid):
        return Where().one_of("uuid", [p.one(entry_uuid)])
    where = Where().one_of("unique_id", [p.one(unique_id)])
    return ctx.latest_only(where) if versioned else where


def _by_seq(hits: Iterable[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda h: h.seq)


# ------------------------------------------------------------------------------------------------
# the queries
# ------------------------------------------------------------------------------------------------
def find_documents(ctx: _Context) -> list[Hit]:
    """FindDocuments, FindDocumentsByReferenceId and their ITI-51 forms (§3.18.4.1.2.3.7.1, .7.14, §3.51)."""
    where = document_conditions(ctx, Where())
    ctx.latest_only(where, ctx.p.any(q.DE_STATUS))
    if ctx.p.has(q.DE_PATIENT_ID):
        ctx.patients_in(where, "patient_id", q.DE_PATIENT_ID, single=not ctx.req.query.multi_patient)
    return ctx.objects(DOCUMENT, ctx.select(t.documents, where))


def find_submission_sets(ctx: _Context) -> list[Hit]:
    """FindSubmissionSets (ITI TF-2 §3.18.4.1.2.3.7.2)."""
    p = ctx.p
    where = ctx.patients_in(Where(), "patient_id", q.SS_PATIENT_ID, single=True)
    where.one_of("status", p.any(q.SS_STATUS))
    _time_range(ctx, where, "submission_time", q.SS_SUBMISSION_TIME_FROM, q.SS_SUBMISSION_TIME_TO)
    if p.has(q.SS_SOURCE_ID):
        where.one_of("source_id", p.any(q.SS_SOURCE_ID))
    if p.has(q.SS_CONTENT_TYPE):
        where.one_of("content_type_code", p.any(q.SS_CONTENT_TYPE))
    if p.has(q.SS_AUTHOR_PERSON):
        where.set_author(p.one(q.SS_AUTHOR_PERSON) or "", sqlite=ctx.sqlite)
    return ctx.objects(SUBMISSION_SET, ctx.select(t.submission_sets, where))


def find_folders(ctx: _Context) -> list[Hit]:
    """FindFolders and FindFoldersForMultiplePatients (ITI TF-2 §3.18.4.1.2.3.7.3, §3.51)."""
    p = ctx.p
    where = ctx.latest_only(Where().one_of("status", p.any(q.FOLDER_STATUS)), p.any(q.FOLDER_STATUS))
    _time_range(ctx, where, "last_update_time", q.FOLDER_LAST_UPDATE_FROM, q.FOLDER_LAST_UPDATE_TO)
    if p.has(q.FOLDER_PATIENT_ID):
        ctx.patients_in(where, "patient_id", q.FOLDER_PATIENT_ID, single=not ctx.req.query.multi_patient)
    for group in p.groups(q.FOLDER_CODE_LIST):
        where.folder_code(group)
    return ctx.objects(FOLDER, ctx.select(t.folders, where))


def get_all(ctx: _Context) -> list[Hit]:
    """GetAll (ITI TF-2 §3.18.4.1.2.3.7.4): a patient's entries, sets and folders, and every association
    from or to one of them (as the NIST registry simulator answers it)."""
    p = ctx.p
    docs_where = ctx.patients_in(Where(), "patient_id", q.PATIENT_ID, single=True)
    ctx.latest_only(document_conditions(ctx, docs_where), p.any(q.DE_STATUS))
    docs = ctx.objects(DOCUMENT, ctx.select(t.documents, docs_where))
    sets_where = ctx.patients_in(Where(), "patient_id", q.PATIENT_ID, single=True)
    sets = ctx.objects(
        SUBMISSION_SET, ctx.select(t.submission_sets, sets_where.one_of("status", p.any(q.SS_STATUS)))
    )
    folders_where = ctx.patients_in(Where(), "patient_id", q.PATIENT_ID, single=True)
    folders_where.one_of("status", p.any(q.FOLDER_STATUS))
    folders = ctx.objects(
        FOLDER, ctx.select(t.folders, ctx.latest_only(folders_where, p.any(q.FOLDER_STATUS)))
    )
    objects = [*docs, *sets, *folders]
    links = _associations_touching(ctx, [h.uuid for h in objects])
    return [*objects, *(link.hit() for link in links)]


def get_documents(ctx: _Context) -> list[Hit]:
    """GetDocuments (ITI TF-2 §3.18.4.1.2.3.7.5)."""
    return _documents_named(ctx)


def get_folders(ctx: _Context) -> list[Hit]:
    """GetFolders (ITI TF-2 §3.18.4.1.2.3.7.6)."""
    return _folders_named(ctx)


def get_associations(ctx: _Context) -> list[Hit]:
    """GetAssociations (ITI TF-2 §3.18.4.1.2.3.7.7): associations from or to the given objects."""
    return [link.hit() for link in _associations_touching(ctx, ctx.p.any(q.UUID))]


def get_documents_and_associations(ctx: _Context) -> list[Hit]:
    """GetDocumentsAndAssociations (ITI TF-2 §3.18.4.1.2.3.7.8)."""
    docs = _documents_named(ctx)
    links = _associations_touching(ctx, [h.uuid for h in docs]) if docs else []
    return [*docs, *(link.hit() for link in links)]


def get_submission_sets(ctx: _Context) -> list[Hit]:
    """GetSubmissionSets (ITI TF-2 §3.18.4.1.2.3.7.9): the sets holding the objects, and their HasMembers."""

    def has_members(chunk: list[str]) -> Where:
        where = ctx.association_status(Where()).one_of("type", [v.HAS_MEMBER]).one_of("target", chunk)
        return where.kind_in([SUBMISSION_SET])  # kind of the source

    rows = ctx.select_in(t.associations, has_members, ctx.p.any(q.UUID), kind_of="source")
    links = ctx.links([row[:-1] for row in rows])
    sources = {link.source for link in links}
    sets = ctx.objects(SUBMISSION_SET, ctx.select_in(t.submission_sets, _with_uuid, sources))
    return [*sets, *(link.hit() for link in links)]


def get_submission_set_and_contents(ctx: _Context) -> list[Hit]:
    """GetSubmissionSetAndContents (ITI TF-2 §3.18.4.1.2.3.7.10).

    The set, the entries and folders it holds (entries filtered by format, confidentiality and
    type), the associations it holds and the folder memberships among what is returned (each only
    when both its ends are returned), and its HasMembers to what is returned.
    """
    sets = ctx.objects(
        SUBMISSION_SET,
        ctx.select(t.submission_sets, _named(ctx, q.SS_ENTRY_UUID, q.SS_UNIQUE_ID, versioned=False)),
    )
    if not sets:
        return []
    ss = sets[0]
    # the HasMembers with the kind of what they point to, so that each table is asked only for
    # its own objects (a set of documents alone costs no folder or association lookups)
    where = ctx.association_status(Where()).one_of("source", [ss.uuid]).one_of("type", [v.HAS_MEMBER])
    member_rows = ctx.select(t.associations, where, kind_of="target")
    members = ctx.links([row[:-1] for row in member_rows])
    by_kind: dict[str | None, set[str]] = {}
    for member, row in zip(members, member_rows, strict=True):
        by_kind.setdefault(row[-1], set()).add(member.target)
    unknown = by_kind.get(None, set())  # not in registry_objects: looked for everywhere
    doc_ids = by_kind.get("document", set()) | unknown
    folder_ids = by_kind.get("folder", set()) | unknown
    assoc_ids = by_kind.get("association", set()) | unknown
    # (select_in asks nothing for no ids)
    docs = _documents_by_ids(ctx, "uuid", doc_ids, filtered=True)
    folders = ctx.objects(FOLDER, ctx.select_in(t.folders, _with_uuid, folder_ids))
    inner = {
        link.uuid: link
        for link in ctx.links(
            ctx.select_in(
                t.associations, lambda chunk: ctx.association_status(Where()).one_of("uuid", chunk), assoc_ids
            )
        )
    }
    if folders and docs:
        # the folder memberships among what is returned, wherever they were submitted
        doc_ids = [h.uuid for h in docs]
        for folder in folders:
            where = ctx.association_status(Where())
            where.one_of("source", [folder.uuid]).one_of("type", [v.HAS_MEMBER]).one_of("target", doc_ids)
            for link in ctx.links(ctx.select(t.associations, where)):
                inner.setdefault(link.uuid, link)
    returned = {ss.uuid} | {h.uuid for h in docs} | {h.uuid for h in folders}
    inner_kept = [link for link in inner.values() if link.source in returned and link.target in returned]
    returned |= {link.uuid for link in inner_kept}
    members_kept = [m for m in members if m.target in returned]
    links = sorted({link.uuid: link for link in [*members_kept, *inner_kept]}.values(), key=lambda k: k.seq)
    return [ss, *docs, *folders, *(link.hit() for link in links)]


def get_folder_and_contents(ctx: _Context) -> list[Hit]:
    """GetFolderAndContents (ITI TF-2 §3.18.4.1.2.3.7.11): a folder, its entries and its HasMembers
    (named by uniqueId at ``$MetadataLevel`` 2: every version of the folder, each with its own)."""
    folders = ctx.objects(FOLDER, ctx.select(t.folders, _named(ctx, q.FOLDER_ENTRY_UUID, q.FOLDER_UNIQUE_ID)))
    if not folders:
        return []
    where = ctx.association_status(Where()).one_of("source", [f.uuid for f in folders])
    members = ctx.links(ctx.select(t.associations, where.one_of("type", [v.HAS_MEMBER])))
    docs = _documents_by_ids(ctx, "uuid", {m.target for m in members}, filtered=True)
    returned = {h.uuid for h in docs}
    return [*folders, *docs, *(m.hit() for m in members if m.target in returned)]


def _one_document(ctx: _Context, types: Sequence[str] | None = None) -> list[Hit]:
    """The entry (entries, for a resubmitted uniqueId) a single-document query names."""
    where = _named(ctx, q.DE_ENTRY_UUID, q.DE_UNIQUE_ID)
    if types is not None:
        where.one_of("object_type", types)
    return ctx.objects(DOCUMENT, ctx.select(t.documents, where))


def get_folders_for_document(ctx: _Context) -> list[Hit]:
    """GetFoldersForDocument (ITI TF-2 §3.18.4.1.2.3.7.12): the folders holding an entry."""
    docs = _one_document(ctx)
    if not docs:
        return []
    where = ctx.association_status(Where()).one_of("type", [v.HAS_MEMBER])
    memberships = ctx.links(ctx.select(t.associations, where.one_of("target", [h.uuid for h in docs])))
    holders = {link.source for link in memberships}
    return ctx.objects(FOLDER, ctx.select_in(t.folders, _with_uuid, holders))


def get_related_documents(ctx: _Context) -> list[Hit]:
    """GetRelatedDocuments (ITI TF-2 §3.18.4.1.2.3.7.13).

    The entry, the entries related to it by associations of the given types, and those
    associations; nothing at all when it has no such relation.
    """
    types = ctx.p.any(q.DE_TYPE) or [v.DOC_ENTRY_STABLE]
    originals = _one_document(ctx, types)
    if not originals:
        return []
    ids = {h.uuid for h in originals}
    links = _associations_touching(ctx, ids, ctx.p.any(q.ASSOCIATION_TYPES))
    others = {link.target if link.source in ids else link.source for link in links} - ids
    related = ctx.objects(
        DOCUMENT,
        ctx.select_in(t.documents, lambda chunk: _with_uuid(chunk).one_of("object_type", types), others),
    )
    related_ids = {h.uuid for h in related}
    kept = [link for link in links if link.source in related_ids or link.target in related_ids]
    if not kept:
        return []
    return [*_by_seq([*originals, *related]), *(link.hit() for link in kept)]


_HANDLERS: dict[str, Callable[[_Context], list[Hit]]] = {
    v.SQ_FIND_DOCUMENTS: find_documents,
    v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID: find_documents,
    v.SQ_FIND_SUBMISSION_SETS: find_submission_sets,
    v.SQ_FIND_FOLDERS: find_folders,
    v.SQ_GET_ALL: get_all,
    v.SQ_GET_DOCUMENTS: get_documents,
    v.SQ_GET_FOLDERS: get_folders,
    v.SQ_GET_ASSOCIATIONS: get_associations,
    v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS: get_documents_and_associations,
    v.SQ_GET_SUBMISSION_SETS: get_submission_sets,
    v.SQ_GET_SUBMISSION_SET_AND_CONTENTS: get_submission_set_and_contents,
    v.SQ_GET_FOLDER_AND_CONTENTS: get_folder_and_contents,
    v.SQ_GET_FOLDERS_FOR_DOCUMENT: get_folders_for_document,
    v.SQ_GET_RELATED_DOCUMENTS: get_related_documents,
    v.SQ_FIND_DOCUMENTS_MPQ: find_documents,
    v.SQ_FIND_FOLDERS_MPQ: find_folders,
    v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ: find_documents,
}
assert _HANDLERS.keys() == q.QUERIES.keys()

# Queries whose objects all come from one table (besides following patient merges): nothing they
# return is joined across statements, so each statement may see its own snapshot.
_ONE_TABLE = frozenset(
    {
        v.SQ_FIND_DOCUMENTS,
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
        v.SQ_FIND_SUBMISSION_SETS,
        v.SQ_FIND_FOLDERS,
        v.SQ_GET_DOCUMENTS,
        v.SQ_GET_FOLDERS,
        v.SQ_GET_ASSOCIATIONS,
        v.SQ_FIND_DOCUMENTS_MPQ,
        v.SQ_FIND_FOLDERS_MPQ,
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ,
    }
)

__all__ = ["StoredQueryEngine", "Hit", "query_response", "with_home", "DEFAULT_MAX_RESULTS"]
