"""ITI-18 Registry Stored Query and ITI-51 Multi-Patient Stored Query: the Document Registry's side.

ITI TF-2 §3.18.4.1.3 (expected actions) and §3.51.4.1.3: the registry finds the objects a stored
query selects (§3.18.4.1.2.3.7.1-14, §3.51.4.1.2.3) with SQL over the indexed columns and side
tables of ``registry.schema``, and answers with a ``query:AdhocQueryResponse`` (ebRS 3.0 §6.3)
assembled by concatenating the canonical ebRIM fragments stored beside each row (LeafClass) or
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
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    exists,
    false,
    literal,
    or_,
    select,
)

from registry import query_params as q
from registry import schema as t
from registry.database import reader
from registry.patients import PatientDirectory, canonical_cx
from xds.errors import XdsError, XdsException
from xds.metadata import vocabulary as v
from xds.metadata.hl7v2 import dtm_key
from xds.metadata.registry_response import error_list_xml, response_status

log = logging.getLogger("xds.registry.query")

DEFAULT_MAX_RESULTS = 10_000
# Values bound in one IN list at most (SQLite's and PostgreSQL's bind-parameter limits are far above).
_CHUNK = 1000

DOCUMENT = "document"
SUBMISSION_SET = "submissionset"
FOLDER = "folder"
ASSOCIATION = "association"

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
    ) -> None:
        self.engine = reader(engine)
        self.patients = patients
        self.home = home_community_id
        self.max_results = max_results
        self._home_attr = f' home="{home_community_id.translate(_ATTR_ESCAPES)}"'.encode()

    # --- the transaction ----------------------------------------------------------------------------
    def answer(self, request: etree._Element) -> bytes:
        """The ``query:AdhocQueryResponse`` for ``request`` — Success, or Failure with its errors."""
        try:
            req = q.parse_query_request(request)
            hits = self.run(req)
        except XdsException as exc:
            return query_response(exc.errors)
        return self.render(req, hits)

    def run(self, req: q.QueryRequest) -> list[Hit]:
        """The objects ``req`` selects, checked for patient count and size (ITI TF-2 §3.18.4.1.3)."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # one snapshot for the several statements of a content query; a query answered
                # from one table runs without BEGIN and COMMIT (two round trips fewer)
                one_table = req.query.id in _ONE_TABLE
                conn = conn.execution_options(
                    isolation_level="AUTOCOMMIT" if one_table else "REPEATABLE READ"
                )
            with conn.begin():
                ctx = _Context(conn, req, self.patients, self.max_results)
                hits = _HANDLERS[req.query.id](ctx)
                if len(hits) > self.max_results:
                    raise _too_many(self.max_results)
                if req.leaf_class and not req.query.multi_patient:
                    self._check_single_patient(conn, hits)
        return hits

    def _check_single_patient(self, conn: Connection, hits: list[Hit]) -> None:
        """XDSResultNotSinglePatient when a LeafClass answer spans patients (ITI TF-2 §3.18.4.1.3)."""
        pids = {h.patient_id for h in hits if h.patient_id is not None}
        if len(pids) < 2:
            return
        survivors = {self.patients.resolve(pid, conn) or pid for pid in pids}
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
@dataclass
class _Context:
    conn: Connection
    req: q.QueryRequest
    patients: PatientDirectory
    max_results: int
    _patient_cache: dict[str, list[str]] = field(default_factory=dict)

    @property
    def p(self) -> q.Params:
        return self.req.params

    @property
    def leaf(self) -> bool:
        return self.req.leaf_class

    @property
    def sqlite(self) -> bool:
        return self.conn.dialect.name == "sqlite"

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
        survivor = self.patients.resolve(pid, self.conn)
        if survivor is not None:
            ids.add(survivor)
            merged = self.conn.execute(select(t.patients.c.pid).where(t.patients.c.merged_into == survivor))
            ids.update(merged.scalars())
        result = sorted(ids)
        self._patient_cache[pid] = result
        return result

    def patients_condition(
        self, column: ColumnElement[str], name: str, *, single: bool
    ) -> ColumnElement[bool]:
        pids = [self.p.one(name) or ""] if single else self.p.any(name)
        ids = sorted({i for pid in pids for i in self.patient_ids(pid)})
        return one_of(column, ids)

    # --- fetching ----------------------------------------------------------------------------------
    def fetch(self, stmt: Select[tuple[object, ...]]) -> list[Row[tuple[object, ...]]]:
        """Rows of ``stmt``; XDSTooManyResults when there are more than the registry returns."""
        rows = self.conn.execute(stmt.limit(self.max_results + 1)).all()
        if len(rows) > self.max_results:
            raise _too_many(self.max_results)
        return list(rows)

    def fetch_in(
        self, build: Callable[[list[str]], Select[tuple[object, ...]]], values: Iterable[str]
    ) -> list[Row[tuple[object, ...]]]:
        """``build(chunk)`` over ``values`` in chunks of bounded size, rows in ``seq`` order, unique."""
        distinct = sorted(set(values))
        rows: dict[object, Row[tuple[object, ...]]] = {}
        for i in range(0, len(distinct), _CHUNK):
            for row in self.fetch(build(distinct[i : i + _CHUNK])):
                rows.setdefault(row.seq, row)
            if len(rows) > self.max_results:
                raise _too_many(self.max_results)
        return [rows[k] for k in sorted(rows)]  # type: ignore[type-var]

    # --- statuses of associations (ITI TF-2 §3.18.4.1.2.3.5.1) ---------------------------------------
    def association_condition(self) -> ColumnElement[bool]:
        a = t.associations.c
        statuses = self.p.any(q.ASSOCIATION_STATUS)
        if statuses:
            return one_of(a.status, statuses)
        if self.req.metadata_level == 1:
            # $MetadataLevel 1 hides Deprecated associations (ITI TF-2 §3.18.4.1.2.3.5.1.1)
            return a.status == v.STATUS_APPROVED
        return literal(True)


# ------------------------------------------------------------------------------------------------
# selections of each kind of object
# ------------------------------------------------------------------------------------------------
def _doc_columns(ctx: _Context) -> Select[tuple[object, ...]]:
    d = t.documents.c
    return select(d.seq, d.uuid, d.patient_id, d.xml if ctx.leaf else literal(None).label("xml"))


def _ss_columns(ctx: _Context) -> Select[tuple[object, ...]]:
    s = t.submission_sets.c
    return select(s.seq, s.uuid, s.patient_id, s.xml if ctx.leaf else literal(None).label("xml"))


def _folder_columns(ctx: _Context) -> Select[tuple[object, ...]]:
    f = t.folders.c
    return select(f.seq, f.uuid, f.patient_id, f.xml if ctx.leaf else literal(None).label("xml"))


def _assoc_columns(ctx: _Context) -> Select[tuple[object, ...]]:
    a = t.associations.c
    xml = a.xml if ctx.leaf else literal(None).label("xml")
    return select(a.seq, a.uuid, a.type, a.source, a.target, xml)


def _hits(kind: str, rows: Sequence[Row[tuple[object, ...]]]) -> list[Hit]:
    # rows are (seq, uuid, patient_id, xml), as the _*_columns selections give them
    return [Hit(kind, uuid, pid, xml, seq) for seq, uuid, pid, xml in rows]  # type: ignore[misc]


def _links(rows: Sequence[Row[tuple[object, ...]]]) -> list[_Link]:
    return [_Link(r.uuid, r.type, r.source, r.target, r.xml, r.seq) for r in rows]


def one_of(column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; ``column = value`` when there is one (nothing to expand per execution)."""
    values = list(values)
    if len(values) == 1:
        return column == values[0]
    return column.in_(values)


def _code_exists(kind: str, values: list[str]) -> ColumnElement[bool]:
    """The document has a ``kind`` code (event/conf/refid) among ``values``."""
    dc = t.document_codes.c
    return exists().where(dc.doc_seq == t.documents.c.seq, dc.kind == kind, one_of(dc.value, values))


def like(column: ColumnElement[str], pattern: str, *, sqlite: bool) -> ColumnElement[bool]:
    """``column`` matches ``pattern`` (``%`` any run, ``_`` one character), case-sensitively.

    PostgreSQL: LIKE with an explicit escape character. SQLite's LIKE ignores ASCII case, so the
    pattern is translated to GLOB, whose other special characters are bracketed.
    """
    if sqlite:
        glob = []
        for ch in pattern:
            if ch == "%":
                glob.append("*")
            elif ch == "_":
                glob.append("?")
            elif ch in "*?[":
                glob.append(f"[{ch}]")
            else:
                glob.append(ch)
        return column.op("GLOB")("".join(glob))
    return column.like(pattern.replace("\\", "\\\\"), escape="\\")


def _time_range(ctx: _Context, column: ColumnElement[str], low: str, high: str) -> list[ColumnElement[bool]]:
    conds = []
    start, end = ctx.p.one(low), ctx.p.one(high)
    if start:
        conds.append(column >= dtm_key(start))
    if end:
        conds.append(column < dtm_key(end))
    return conds


_DOC_CODE_COLUMNS = (
    (q.DE_CLASS_CODE, t.documents.c.class_code),
    (q.DE_TYPE_CODE, t.documents.c.type_code),
    (q.DE_PRACTICE_SETTING_CODE, t.documents.c.practice_setting_code),
    (q.DE_FACILITY_CODE, t.documents.c.facility_type_code),
    (q.DE_FORMAT_CODE, t.documents.c.format_code),
)
_DOC_TIMES = (
    (t.documents.c.creation_time, q.DE_CREATION_TIME_FROM, q.DE_CREATION_TIME_TO),
    (t.documents.c.service_start_time, q.DE_SERVICE_START_FROM, q.DE_SERVICE_START_TO),
    (t.documents.c.service_stop_time, q.DE_SERVICE_STOP_FROM, q.DE_SERVICE_STOP_TO),
)


def document_conditions(ctx: _Context) -> list[ColumnElement[bool]]:
    """The DocumentEntry filters of ITI TF-2 §3.18.4.1.2.3.7.1 that the query defines and the request gives."""
    d = t.documents.c
    p = ctx.p
    conds: list[ColumnElement[bool]] = []
    for name, column in _DOC_CODE_COLUMNS:
        if p.has(name):
            conds.append(one_of(column, p.any(name)))
    for column, low, high in _DOC_TIMES:
        conds += _time_range(ctx, column, low, high)
    for group in p.groups(q.DE_EVENT_CODE):
        conds.append(_code_exists("event", group))
    for group in p.groups(q.DE_CONFIDENTIALITY_CODE):
        conds.append(_code_exists("conf", group))
    for group in p.groups(q.DE_REFERENCE_ID):
        conds.append(_code_exists("refid", group))
    if p.has(q.DE_AUTHOR_PERSON):
        dc = t.document_codes.c
        matches = [like(dc.value, pattern, sqlite=ctx.sqlite) for pattern in p.any(q.DE_AUTHOR_PERSON)]
        conds.append(exists().where(dc.doc_seq == d.seq, dc.kind == "author", or_(*matches)))
    if p.has(q.DE_STATUS):
        conds.append(one_of(d.status, p.any(q.DE_STATUS)))
    if ctx.defines(q.DE_TYPE):
        conds.append(one_of(d.object_type, p.any(q.DE_TYPE) or [v.DOC_ENTRY_STABLE]))
    if p.has(q.DE_AVAILABILITY) and v.DOCUMENT_AVAILABILITY_ONLINE not in p.any(q.DE_AVAILABILITY):
        # this registry holds no Offline entries (documentAvailability is changed only by ITI-57)
        conds.append(false())
    return conds


def _documents_by_ids(
    ctx: _Context, column: ColumnElement[str], ids: Iterable[str], *, filtered: bool
) -> list[Hit]:
    extra = document_conditions(ctx) if filtered else []
    rows = ctx.fetch_in(lambda chunk: _doc_columns(ctx).where(one_of(column, chunk), *extra), ids)
    return _hits(DOCUMENT, rows)


def _associations(ctx: _Context, *conds: ColumnElement[bool]) -> list[_Link]:
    stmt = _assoc_columns(ctx).where(ctx.association_condition(), *conds).order_by(t.associations.c.seq)
    return _links(ctx.fetch(stmt))


def _associations_touching(ctx: _Context, ids: Iterable[str], *conds: ColumnElement[bool]) -> list[_Link]:
    """Associations whose source or target is one of ``ids``."""
    a = t.associations.c
    rows = ctx.fetch_in(
        lambda chunk: _assoc_columns(ctx).where(
            ctx.association_condition(), or_(one_of(a.source, chunk), one_of(a.target, chunk)), *conds
        ),
        ids,
    )
    return _links(rows)


def _documents_named(ctx: _Context) -> list[Hit]:
    """The entries a Get* query names by entryUUID, uniqueId or logicalID (unfiltered)."""
    d = t.documents.c
    p = ctx.p
    for name, column in ((q.DE_ENTRY_UUID, d.uuid), (q.DE_UNIQUE_ID, d.unique_id), (q.DE_LOGICAL_ID, d.lid)):
        if p.has(name):
            return _documents_by_ids(ctx, column, p.any(name), filtered=False)
    return []


def _folders_named(ctx: _Context) -> list[Hit]:
    f = t.folders.c
    p = ctx.p
    for name, column in (
        (q.FOLDER_ENTRY_UUID, f.uuid),
        (q.FOLDER_UNIQUE_ID, f.unique_id),
        (q.FOLDER_LOGICAL_ID, f.lid),
    ):
        if p.has(name):
            rows = ctx.fetch_in(
                lambda chunk, c=column: _folder_columns(ctx).where(one_of(c, chunk)), p.any(name)
            )
            return _hits(FOLDER, rows)
    return []


def _by_seq(hits: Iterable[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda h: h.seq)


# ------------------------------------------------------------------------------------------------
# the queries
# ------------------------------------------------------------------------------------------------
def find_documents(ctx: _Context) -> list[Hit]:
    """FindDocuments, FindDocumentsByReferenceId and their ITI-51 forms (§3.18.4.1.2.3.7.1, .7.14, §3.51)."""
    d = t.documents.c
    conds = document_conditions(ctx)
    if ctx.p.has(q.DE_PATIENT_ID):
        conds.append(
            ctx.patients_condition(d.patient_id, q.DE_PATIENT_ID, single=not ctx.req.query.multi_patient)
        )
    return _hits(DOCUMENT, ctx.fetch(_doc_columns(ctx).where(*conds).order_by(d.seq)))


def find_submission_sets(ctx: _Context) -> list[Hit]:
    """FindSubmissionSets (ITI TF-2 §3.18.4.1.2.3.7.2)."""
    s = t.submission_sets.c
    p = ctx.p
    conds = [
        ctx.patients_condition(s.patient_id, q.SS_PATIENT_ID, single=True),
        one_of(s.status, p.any(q.SS_STATUS)),
        *_time_range(ctx, s.submission_time, q.SS_SUBMISSION_TIME_FROM, q.SS_SUBMISSION_TIME_TO),
    ]
    if p.has(q.SS_SOURCE_ID):
        conds.append(one_of(s.source_id, p.any(q.SS_SOURCE_ID)))
    if p.has(q.SS_CONTENT_TYPE):
        conds.append(one_of(s.content_type_code, p.any(q.SS_CONTENT_TYPE)))
    if p.has(q.SS_AUTHOR_PERSON):
        sa = t.submission_set_authors.c
        pattern = p.one(q.SS_AUTHOR_PERSON) or ""
        conds.append(exists().where(sa.ss_seq == s.seq, like(sa.author_person, pattern, sqlite=ctx.sqlite)))
    return _hits(SUBMISSION_SET, ctx.fetch(_ss_columns(ctx).where(*conds).order_by(s.seq)))


def find_folders(ctx: _Context) -> list[Hit]:
    """FindFolders and FindFoldersForMultiplePatients (ITI TF-2 §3.18.4.1.2.3.7.3, §3.51)."""
    f = t.folders.c
    p = ctx.p
    conds = [
        one_of(f.status, p.any(q.FOLDER_STATUS)),
        *_time_range(ctx, f.last_update_time, q.FOLDER_LAST_UPDATE_FROM, q.FOLDER_LAST_UPDATE_TO),
    ]
    if p.has(q.FOLDER_PATIENT_ID):
        conds.append(
            ctx.patients_condition(f.patient_id, q.FOLDER_PATIENT_ID, single=not ctx.req.query.multi_patient)
        )
    fc = t.folder_codes.c
    for group in p.groups(q.FOLDER_CODE_LIST):
        conds.append(exists().where(fc.folder_seq == f.seq, one_of(fc.value, group)))
    return _hits(FOLDER, ctx.fetch(_folder_columns(ctx).where(*conds).order_by(f.seq)))


def get_all(ctx: _Context) -> list[Hit]:
    """GetAll (ITI TF-2 §3.18.4.1.2.3.7.4): a patient's entries, sets and folders, and every association
    from or to one of them (as the NIST registry simulator answers it)."""
    d, s, f = t.documents.c, t.submission_sets.c, t.folders.c
    p = ctx.p
    docs = _hits(
        DOCUMENT,
        ctx.fetch(
            _doc_columns(ctx)
            .where(ctx.patients_condition(d.patient_id, q.PATIENT_ID, single=True), *document_conditions(ctx))
            .order_by(d.seq)
        ),
    )
    sets = _hits(
        SUBMISSION_SET,
        ctx.fetch(
            _ss_columns(ctx)
            .where(
                ctx.patients_condition(s.patient_id, q.PATIENT_ID, single=True),
                one_of(s.status, p.any(q.SS_STATUS)),
            )
            .order_by(s.seq)
        ),
    )
    folders = _hits(
        FOLDER,
        ctx.fetch(
            _folder_columns(ctx)
            .where(
                ctx.patients_condition(f.patient_id, q.PATIENT_ID, single=True),
                one_of(f.status, p.any(q.FOLDER_STATUS)),
            )
            .order_by(f.seq)
        ),
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
    a, s = t.associations.c, t.submission_sets.c
    links = _links(
        ctx.fetch_in(
            lambda chunk: (
                _assoc_columns(ctx)
                .join(t.submission_sets, s.uuid == a.source)
                .where(ctx.association_condition(), a.type == v.HAS_MEMBER, one_of(a.target, chunk))
            ),
            ctx.p.any(q.UUID),
        )
    )
    sources = {link.source for link in links}
    sets = _hits(
        SUBMISSION_SET, ctx.fetch_in(lambda chunk: _ss_columns(ctx).where(one_of(s.uuid, chunk)), sources)
    )
    return [*sets, *(link.hit() for link in links)]


def get_submission_set_and_contents(ctx: _Context) -> list[Hit]:
    """GetSubmissionSetAndContents (ITI TF-2 §3.18.4.1.2.3.7.10).

    The set, the entries and folders it holds (entries filtered by format, confidentiality and
    type), the associations it holds and the folder memberships among what is returned (each only
    when both its ends are returned), and its HasMembers to what is returned.
    """
    s, f, a = t.submission_sets.c, t.folders.c, t.associations.c
    p = ctx.p
    where = (
        s.uuid == p.one(q.SS_ENTRY_UUID) if p.has(q.SS_ENTRY_UUID) else s.unique_id == p.one(q.SS_UNIQUE_ID)
    )
    sets = _hits(SUBMISSION_SET, ctx.fetch(_ss_columns(ctx).where(where)))
    if not sets:
        return []
    ss = sets[0]
    # the HasMembers with the kind of what they point to, so that each table is asked only for
    # its own objects (a set of documents alone costs no folder or association lookups)
    r = t.registry_objects.c
    member_rows = ctx.fetch(
        _assoc_columns(ctx)
        .add_columns(r.kind)
        .outerjoin(t.registry_objects, r.uuid == a.target)
        .where(ctx.association_condition(), a.source == ss.uuid, a.type == v.HAS_MEMBER)
        .order_by(a.seq)
    )
    members = _links(member_rows)
    by_kind: dict[str | None, set[str]] = {}
    for row in member_rows:
        by_kind.setdefault(row.kind, set()).add(row.target)
    unknown = by_kind.get(None, set())  # not in registry_objects: looked for everywhere
    doc_ids = by_kind.get("document", set()) | unknown
    folder_ids = by_kind.get("folder", set()) | unknown
    assoc_ids = by_kind.get("association", set()) | unknown
    # (fetch_in asks nothing for no ids)
    docs = _documents_by_ids(ctx, t.documents.c.uuid, doc_ids, filtered=True)
    folders = _hits(
        FOLDER, ctx.fetch_in(lambda chunk: _folder_columns(ctx).where(one_of(f.uuid, chunk)), folder_ids)
    )
    inner = {
        link.uuid: link
        for link in _links(
            ctx.fetch_in(
                lambda chunk: _assoc_columns(ctx).where(ctx.association_condition(), one_of(a.uuid, chunk)),
                assoc_ids,
            )
        )
    }
    if folders and docs:
        # the folder memberships among what is returned, wherever they were submitted
        doc_ids = [h.uuid for h in docs]
        for folder in folders:
            for link in _associations(
                ctx, a.source == folder.uuid, a.type == v.HAS_MEMBER, one_of(a.target, doc_ids)
            ):
                inner.setdefault(link.uuid, link)
    returned = {ss.uuid} | {h.uuid for h in docs} | {h.uuid for h in folders}
    inner_kept = [link for link in inner.values() if link.source in returned and link.target in returned]
    returned |= {link.uuid for link in inner_kept}
    members_kept = [m for m in members if m.target in returned]
    links = sorted({link.uuid: link for link in [*members_kept, *inner_kept]}.values(), key=lambda k: k.seq)
    return [ss, *docs, *folders, *(link.hit() for link in links)]


def get_folder_and_contents(ctx: _Context) -> list[Hit]:
    """GetFolderAndContents (ITI TF-2 §3.18.4.1.2.3.7.11): a folder, its entries and its HasMembers."""
    f, a = t.folders.c, t.associations.c
    p = ctx.p
    where = (
        f.uuid == p.one(q.FOLDER_ENTRY_UUID)
        if p.has(q.FOLDER_ENTRY_UUID)
        else f.unique_id == p.one(q.FOLDER_UNIQUE_ID)
    )
    folders = _hits(FOLDER, ctx.fetch(_folder_columns(ctx).where(where)))
    if not folders:
        return []
    folder = folders[0]
    members = _associations(ctx, a.source == folder.uuid, a.type == v.HAS_MEMBER)
    docs = _documents_by_ids(ctx, t.documents.c.uuid, {m.target for m in members}, filtered=True)
    returned = {h.uuid for h in docs}
    return [folder, *docs, *(m.hit() for m in members if m.target in returned)]


def _one_document(ctx: _Context, *extra: ColumnElement[bool]) -> list[Hit]:
    """The entry (entries, for a resubmitted uniqueId) a single-document query names."""
    d = t.documents.c
    p = ctx.p
    where = (
        d.uuid == p.one(q.DE_ENTRY_UUID) if p.has(q.DE_ENTRY_UUID) else d.unique_id == p.one(q.DE_UNIQUE_ID)
    )
    return _hits(DOCUMENT, ctx.fetch(_doc_columns(ctx).where(where, *extra).order_by(d.seq)))


def get_folders_for_document(ctx: _Context) -> list[Hit]:
    """GetFoldersForDocument (ITI TF-2 §3.18.4.1.2.3.7.12): the folders holding an entry."""
    f, a = t.folders.c, t.associations.c
    docs = _one_document(ctx)
    if not docs:
        return []
    holders = select(a.source).where(
        a.type == v.HAS_MEMBER, one_of(a.target, [h.uuid for h in docs]), ctx.association_condition()
    )
    return _hits(FOLDER, ctx.fetch(_folder_columns(ctx).where(f.uuid.in_(holders)).order_by(f.seq)))


def get_related_documents(ctx: _Context) -> list[Hit]:
    """GetRelatedDocuments (ITI TF-2 §3.18.4.1.2.3.7.13).

    The entry, the entries related to it by associations of the given types, and those
    associations; nothing at all when it has no such relation.
    """
    a, d = t.associations.c, t.documents.c
    type_filter = one_of(d.object_type, ctx.p.any(q.DE_TYPE) or [v.DOC_ENTRY_STABLE])
    originals = _one_document(ctx, type_filter)
    if not originals:
        return []
    ids = {h.uuid for h in originals}
    links = _associations_touching(ctx, ids, one_of(a.type, ctx.p.any(q.ASSOCIATION_TYPES)))
    others = {link.target if link.source in ids else link.source for link in links} - ids
    related = _hits(
        DOCUMENT,
        ctx.fetch_in(lambda chunk: _doc_columns(ctx).where(one_of(d.uuid, chunk), type_filter), others),
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

__all__ = ["StoredQueryEngine", "Hit", "query_response", "with_home", "like", "DEFAULT_MAX_RESULTS"]
