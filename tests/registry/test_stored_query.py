"""ITI-18 / ITI-51 stored queries against a real database (SQLite file, or PostgreSQL in CI).

The data set is registered through ``Registrar`` (ITI-42) with ``xds.samples`` builders, each
attribute set to a known value, so every query and every parameter can be checked by the exact set
of objects it must return. Every answer is validated against the official ebRS 3.0 query schema.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import Engine, select
from support import new_database

from xds import safexml, samples
from xds.database import migrate, open_engine
from xds.metadata import vocabulary as v
from xds.metadata.model import (
    Classification,
    DocumentEntry,
    LocalizedString,
    RegistryObject,
    Slot,
    Submission,
)
from xds.profiles import get_profile
from xds.registry import query_params as qp
from xds.registry import schema as t
from xds.registry.patients import PatientDirectory
from xds.registry.register import Registrar
from xds.registry.stored_query import StoredQueryEngine, with_home

APPROVED = v.STATUS_APPROVED
DEPRECATED = v.STATUS_DEPRECATED
CODES = "1.2.3.4.5"  # the coding scheme of every code in the data set
HPR = samples.HPR_OID
_RIM = "{" + v.NS_RIM + "}"


# ------------------------------------------------------------------------------------------------
# building the data set
# ------------------------------------------------------------------------------------------------
def code_value(code: str) -> str:
    return f"{code}^^{CODES}"


def set_codes(obj: RegistryObject, scheme: str, *codes: str) -> None:
    """Replace ``obj``'s codes of ``scheme`` with ``codes`` (all in the data set's coding scheme)."""
    obj.classifications = [c for c in obj.classifications if c.classification_scheme != scheme]
    for i, code in enumerate(codes):
        obj.classifications.append(
            Classification(
                id=f"cl-{obj.id}-{scheme[-6:]}-{i}",
                classified_object=obj.id,
                classification_scheme=scheme,
                node_representation=code,
                name=[LocalizedString(f"display {code}")],
                slots=[Slot("codingScheme", [CODES])],
            )
        )


def set_authors(obj: RegistryObject, scheme: str, *persons: str) -> None:
    authors = [c for c in obj.classifications if c.classification_scheme == scheme]
    template = authors[0]
    obj.classifications = [c for c in obj.classifications if c.classification_scheme != scheme]
    for i, person in enumerate(persons):
        slots = [Slot("authorPerson", [person])] + [s for s in template.slots if s.name != "authorPerson"]
        obj.classifications.append(
            Classification(
                id=f"cl-{obj.id}-author-{i}",
                classified_object=obj.id,
                classification_scheme=scheme,
                node_representation="",
                slots=slots,
            )
        )


@dataclass
class Doc:
    """What a test document is made of; every field has the value the queries look for."""

    key: str
    cls: str = "C1"
    type: str = "T1"
    practice: str = "P1"
    facility: str = "F1"
    format: str = "FMT1"
    events: tuple[str, ...] = ("E1",)
    confs: tuple[str, ...] = ("N",)
    authors: tuple[str, ...] = (f"111^Ford^Harrison^^^^^^&{HPR}&ISO",)
    created: str = "20041224101010"
    start: str = "200412240900"
    stop: str = "200412241100"
    refids: tuple[str, ...] = ()
    on_demand: bool = False


def build_document(spec: Doc, patient: str, rng: random.Random) -> DocumentEntry:
    doc = samples.document_entry(spec.key, patient, rng)
    set_codes(doc, v.DE_CLASS_CODE, spec.cls)
    set_codes(doc, v.DE_TYPE_CODE, spec.type)
    set_codes(doc, v.DE_PRACTICE_SETTING_CODE, spec.practice)
    set_codes(doc, v.DE_HEALTHCARE_FACILITY_TYPE_CODE, spec.facility)
    set_codes(doc, v.DE_FORMAT_CODE, spec.format)
    set_codes(doc, v.DE_EVENT_CODE, *spec.events)
    set_codes(doc, v.DE_CONFIDENTIALITY_CODE, *spec.confs)
    set_authors(doc, v.DE_AUTHOR, *spec.authors)
    doc.set_slot("creationTime", [spec.created])
    doc.set_slot("serviceStartTime", [spec.start])
    doc.set_slot("serviceStopTime", [spec.stop])
    if spec.refids:
        doc.set_slot("urn:ihe:iti:xds:2013:referenceIdList", list(spec.refids))
    if spec.on_demand:
        doc.object_type = v.DOC_ENTRY_ON_DEMAND
        doc.slots = [
            s
            for s in doc.slots
            if s.name not in ("hash", "size", "creationTime", "serviceStartTime", "serviceStopTime")
        ]
    return doc


@dataclass
class World:
    """The registered data set: entryUUIDs and uniqueIds by key, patients by name."""

    engine: Engine
    patients: dict[str, str] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)
    clock: list[str] = field(default_factory=list)

    def engine_for(self, **kwargs: object) -> StoredQueryEngine:
        return StoredQueryEngine(self.engine, PatientDirectory(self.engine), **kwargs)  # type: ignore[arg-type]

    def keys(self, ids: list[str]) -> list[str]:
        """Data-set keys of ``ids`` (entryUUIDs), in answer order; unknown ids kept as they are."""
        by_uuid = {u: k for k, u in self.uuids.items()}
        return [by_uuid.get(i, i) for i in ids]


def submit(
    world: World,
    registrar: Registrar,
    rng: random.Random,
    *,
    ss_key: str,
    patient: str,
    docs: tuple[Doc, ...] = (),
    folder: tuple[str, tuple[str, ...], tuple[str, ...]] | None = None,  # key, codes, member doc keys
    relations: tuple[tuple[str, str, str, str], ...] = (),  # assoc key, type, source key, target key
    submission_time: str = "20200101120000",
    ss_author: str = f"900^Hansen^Hans^^^^^^&{HPR}&ISO",
    content_type: str = "CT1",
    source_id: str = "1.2.3.99",
    update_time: str = "20200101120000",
) -> None:
    """Register one submission; remember the entryUUID and uniqueId of every object by its key."""
    ss = samples.submission_set(ss_key, patient, rng)
    ss.set_slot("submissionTime", [submission_time])
    set_codes(ss, v.SS_CONTENT_TYPE_CODE, content_type)
    set_authors(ss, v.SS_AUTHOR, ss_author)
    ss.set_external_id(v.SS_SOURCE_ID, source_id)
    keyed: dict[str, RegistryObject] = {ss_key: ss}
    for spec in docs:
        keyed[spec.key] = build_document(spec, patient, rng)
        keyed[f"{ss_key}>{spec.key}"] = samples.has_member(f"{ss_key}>{spec.key}", ss_key, spec.key)
    if folder is not None:
        fkey, codes, members = folder
        f = samples.folder(fkey, patient)
        set_codes(f, v.FOLDER_CODE_LIST, *codes)
        keyed[fkey] = f
        keyed[f"{ss_key}>{fkey}"] = samples.has_member(f"{ss_key}>{fkey}", ss_key, fkey, status=None)
        for member in members:
            link = f"{fkey}>{member}"
            target = member if member in keyed else world.uuids[member]
            keyed[link] = samples.has_member(link, fkey, target, status=None)
            keyed[f"{ss_key}>{link}"] = samples.has_member(f"{ss_key}>{link}", ss_key, link, status=None)
    for key, kind, source, target in relations:
        keyed[key] = samples.relationship(key, kind, source, world.uuids[target])
        keyed[f"{ss_key}>{key}"] = samples.has_member(f"{ss_key}>{key}", ss_key, key, status=None)
    world.clock.append(update_time)
    registrar.register(Submission(objects=list(keyed.values())))
    # registration gave every object a urn:uuid id, in place
    for key, obj in keyed.items():
        world.uuids[key] = obj.id
        uid = getattr(obj, "unique_id", None)
        if uid:
            world.uids[key] = uid


HARRISON = f"111^Ford^Harrison^^^^^^&{HPR}&ISO"
ANN = f"222^Smith^Ann^^^^^^&{HPR}&ISO"
ODD = f"333^O*Br[i]en\\x^Pat^^^^^^&{HPR}&ISO"  # characters GLOB and LIKE treat specially
REF1 = "R1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order"
REF2 = "R2^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession"


def build_world(engine: Engine) -> World:
    """The data set every query test reads.

    Patient A: SS1 {A1, A2}; SS2 {folder FA {A3, A6 (on-demand)}}; SS3 {A4 RPLC A1};
    SS4 {A5 APND A2}. Patient B: SS5 {B1, folder FB {B1}}. Patient C: SS6 {C1} filed under
    C's old id, merged (ITI-8 A40) into C's new id, then SS7 {C2} under the new id.
    """
    rng = random.Random(11)
    patients = PatientDirectory(engine)
    world = World(engine)
    registrar = Registrar(engine, patients, get_profile("norway"), clock=lambda: world.clock[-1])
    numbers = set()
    while len(numbers) < 4:
        numbers.add(samples.person_number(rng))
    a, b, c_old, c_new = (samples.patient_cx(n) for n in sorted(numbers))
    world.patients = {"A": a, "B": b, "C_old": c_old, "C_new": c_new}

    submit(
        world,
        registrar,
        rng,
        ss_key="SS1",
        patient=a,
        docs=(
            Doc("A1", events=("E1", "E2"), confs=("N",), refids=(REF1,)),
            Doc(
                "A2",
                cls="C2",
                type="T2",
                practice="P2",
                facility="F2",
                format="FMT2",
                events=("E1",),
                confs=("N", "R"),
                authors=(ANN, ODD),
                created="20050101000000",
                start="200501010800",
                stop="200501011000",
                refids=(REF1, REF2),
            ),
        ),
        submission_time="20200101120000",
        content_type="CT1",
        source_id="1.2.3.99",
    )
    submit(
        world,
        registrar,
        rng,
        ss_key="SS2",
        patient=a,
        docs=(
            Doc("A3", cls="C3", created="20060606060606", start="2006", stop="2007", confs=("R",)),
            Doc("A6", on_demand=True),
        ),
        folder=("FA", ("K1", "K2"), ("A3", "A6")),
        submission_time="20210101120000",
        ss_author=ANN,
        content_type="CT2",
        source_id="1.2.3.98",
        update_time="20210101120000",
    )
    submit(
        world,
        registrar,
        rng,
        ss_key="SS3",
        patient=a,
        docs=(Doc("A4", created="20070101000000", format="FMT2"),),
        relations=(("rplc", v.RPLC, "A4", "A1"),),
        submission_time="20220101120000",
    )
    submit(
        world,
        registrar,
        rng,
        ss_key="SS4",
        patient=a,
        docs=(Doc("A5", cls="C2", created="20080101000000"),),
        relations=(("apnd", v.APND, "A5", "A2"),),
        submission_time="20230101120000",
    )
    submit(
        world,
        registrar,
        rng,
        ss_key="SS5",
        patient=b,
        docs=(Doc("B1", events=("E1",), refids=(REF1,)),),
        folder=("FB", ("K1",), ("B1",)),
        update_time="20190101120000",
    )
    submit(world, registrar, rng, ss_key="SS6", patient=c_old, docs=(Doc("C1"),))
    patients.merge(c_old, c_new)
    submit(world, registrar, rng, ss_key="SS7", patient=c_new, docs=(Doc("C2"),))
    return world


# ------------------------------------------------------------------------------------------------
# requests and answers
# ------------------------------------------------------------------------------------------------
def qs(value: str) -> str:
    """A quoted stored-query string value (a quote inside doubled)."""
    return "'" + value.replace("'", "''") + "'"


def ql(*values: str) -> str:
    """A stored-query list value: ('a', 'b')."""
    return "(" + ", ".join(qs(x) for x in values) + ")"


def request(
    query_id: str, *slots: tuple[str, ...], return_type: str = "LeafClass", home: str | None = None
) -> etree._Element:
    """An AdhocQueryRequest; each slot is (name, value text, value text, ...)."""
    root = etree.Element(f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM})
    etree.SubElement(
        root, f"{{{v.NS_QUERY}}}ResponseOption", returnType=return_type, returnComposedObjects="true"
    )
    adhoc = etree.SubElement(root, _RIM + "AdhocQuery", id=query_id)
    if home:
        adhoc.set("home", home)
    for name, *values in slots:
        slot = etree.SubElement(adhoc, _RIM + "Slot", name=name)
        value_list = etree.SubElement(slot, _RIM + "ValueList")
        for text in values:
            etree.SubElement(value_list, _RIM + "Value").text = text
    return root


@dataclass
class Answer:
    status: str
    errors: list[tuple[str, str, str]]  # code, severity, location
    objects: list[tuple[str, str]]  # element local name, id
    element: etree._Element
    raw: bytes

    @property
    def codes(self) -> list[str]:
        return [code for code, severity, _ in self.errors if severity == v.SEVERITY_ERROR]

    @property
    def warnings(self) -> list[str]:
        return [code for code, severity, _ in self.errors if severity == v.SEVERITY_WARNING]

    def ids(self, kind: str | None = None) -> list[str]:
        return [i for tag, i in self.objects if kind is None or tag == kind]


@pytest.fixture(scope="session")
def query_schema(standards: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(standards / "iti/schema/ebRS/query.xsd")))


def ask(engine: StoredQueryEngine, schema: etree.XMLSchema, req: etree._Element) -> Answer:
    raw = engine.answer(req)
    el = safexml.parse(raw)
    schema.assertValid(el)
    errors = [
        (e.get("errorCode", ""), e.get("severity", ""), e.get("location", ""))
        for e in el.iter("{" + v.NS_RS + "}RegistryError")
    ]
    object_list = el.find(_RIM + "RegistryObjectList")
    assert object_list is not None
    objects = [(etree.QName(o).localname, o.get("id", "")) for o in object_list]
    return Answer(el.get("status", "").rsplit(":", 1)[-1], errors, objects, el, raw)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with new_database(tmp_path_factory.mktemp("sq")) as url:
        engine = open_engine(url)
        migrate(engine)
        yield build_world(engine)
        engine.dispose()


class Q:
    """Runs queries against the world and names answers by data-set keys."""

    def __init__(self, world: World, schema: etree.XMLSchema, **engine_options: object) -> None:
        self.world = world
        self.schema = schema
        self.engine = world.engine_for(**engine_options)

    def __call__(
        self, query_id: str, *slots: tuple[str, ...], return_type: str = "LeafClass", home: str | None = None
    ) -> Answer:
        return ask(self.engine, self.schema, request(query_id, *slots, return_type=return_type, home=home))

    def keys(self, answer: Answer, kind: str | None = None) -> list[str]:
        assert answer.status == "Success", answer.errors
        return self.world.keys(answer.ids(kind))

    def pid(self, name: str) -> tuple[str, str]:
        return (qp.DE_PATIENT_ID, qs(self.world.patients[name]))


@pytest.fixture(scope="module")
def query(world: World, query_schema: etree.XMLSchema) -> Q:
    return Q(world, query_schema)


STATUS_APPROVED = (qp.DE_STATUS, ql(APPROVED))
STATUS_BOTH = (qp.DE_STATUS, ql(APPROVED, DEPRECATED))
EO = "ExtrinsicObject"
RP = "RegistryPackage"
AS = "Association"
OR = "ObjectRef"


# ------------------------------------------------------------------------------------------------
# parameter values (ITI TF-2 §3.18.4.1.2.3.4-5)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("'a'", ["a"]),
        ("  'a b'  ", ["a b"]),
        ("('a','b')", ["a", "b"]),
        ("( 'a' ,\n 'b' )", ["a", "b"]),
        ("'O''Brien'", ["O'Brien"]),
        ("('it''s', 'x,y')", ["it's", "x,y"]),
        ("20041224", ["20041224"]),
        ("(1, 2)", ["1", "2"]),
        ("()", []),
        ("''", [""]),
    ],
)
def test_parse_value(text: str, values: list[str]) -> None:
    assert qp.parse_value(text) == values


@pytest.mark.parametrize(
    "text", ["('a'", "'a", "'a' 'b'", "('a',)", "('a' 'b')", "a'b", "(a,(b))", "'a','b'"]
)
def test_parse_value_refuses_malformed(text: str) -> None:
    with pytest.raises(qp.MalformedValue):
        qp.parse_value(text)


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        (qp.CODE, "C1^^1.2.3", True),
        (qp.CODE, "a^^", False),
        (qp.CODE, "^^1.2.3", False),
        (qp.CODE, "Dialysis", False),
        (qp.TIME, "2004", True),
        (qp.TIME, "20041224101010", True),
        (qp.TIME, "2004-12-24", False),
        (qp.TIME, "20041324", False),
        (qp.STATUS, APPROVED, True),
        (qp.STATUS, "Approved", False),
        (qp.ENTRY_TYPE, v.DOC_ENTRY_ON_DEMAND, True),
        (qp.ENTRY_TYPE, "urn:uuid:00000000-0000-0000-0000-000000000000", False),
        (qp.LEVEL, "1", True),
        (qp.LEVEL, "2", True),
        (qp.LEVEL, "3", False),
        (qp.LEVEL, "one", False),
        (qp.PID, "123^^^&1.2.3&ISO", True),
        (qp.PID, "123", False),
        (qp.AVAILABILITY, v.DOCUMENT_AVAILABILITY_ONLINE, True),
        (qp.AVAILABILITY, "Online", False),
        (qp.TEXT, "", False),
    ],
)
def test_check_value(kind: str, value: str, ok: bool) -> None:
    assert (qp.check_value(kind, value) == "") is ok


def test_every_stored_query_has_a_definition_and_a_name() -> None:
    ids = {v.SQ_FIND_DOCUMENTS, v.SQ_GET_RELATED_DOCUMENTS, v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ}
    assert ids <= qp.QUERIES.keys()
    assert len(qp.QUERIES) == 17 == len(v.STORED_QUERY_NAMES)
    assert sum(q.multi_patient for q in qp.QUERIES.values()) == 3


def test_with_home_sets_or_replaces_the_home_attribute() -> None:
    bare = b'<rim:ObjectRef xmlns:rim="x" id="urn:uuid:1"/>'
    assert (
        with_home(bare, b' home="urn:oid:9"')
        == b'<rim:ObjectRef xmlns:rim="x" home="urn:oid:9" id="urn:uuid:1"/>'
    )
    stored = b'<rim:RegistryPackage xmlns:rim="x" id="urn:uuid:1" home="urn:oid:1" lid="l"><rim:Slot/></rim:RegistryPackage>'
    assert with_home(stored, b' home="urn:oid:9"') == (
        b'<rim:RegistryPackage xmlns:rim="x" id="urn:uuid:1" home="urn:oid:9" lid="l"><rim:Slot/></rim:RegistryPackage>'
    )


# ------------------------------------------------------------------------------------------------
# FindDocuments (ITI TF-2 §3.18.4.1.2.3.7.1)
# ------------------------------------------------------------------------------------------------
def test_find_documents_approved_stable_entries_of_the_patient(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED)
    assert query.keys(answer, EO) == ["A2", "A3", "A4", "A5"]
    assert answer.ids() == answer.ids(EO)


def test_find_documents_leafclass_is_the_stored_fragments_verbatim(query: Q, world: World) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED)
    with world.engine.connect() as conn:
        stored = conn.execute(
            select(t.documents.c.xml).where(t.documents.c.uuid == world.uuids["A2"])
        ).scalar_one()
    assert stored in answer.raw
    doc = answer.element.find(f"{_RIM}RegistryObjectList/{_RIM}ExtrinsicObject")
    assert doc is not None and doc.get("status") == APPROVED and doc.get("home") is None
    assert doc.find(f"{_RIM}ExternalIdentifier") is not None  # composed objects included


def test_find_documents_objectref(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, return_type="ObjectRef")
    assert query.keys(answer, OR) == ["A2", "A3", "A4", "A5"]
    assert b"ExtrinsicObject" not in answer.raw


@pytest.mark.parametrize(
    ("status", "expected"),
    [((DEPRECATED,), ["A1"]), ((APPROVED, DEPRECATED), ["A1", "A2", "A3", "A4", "A5"])],
)
def test_find_documents_status(query: Q, status: tuple[str, ...], expected: list[str]) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), (qp.DE_STATUS, ql(*status)))
    assert query.keys(answer) == expected


def test_find_documents_status_in_several_values_elements(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), (qp.DE_STATUS, ql(APPROVED), ql(DEPRECATED)))
    assert query.keys(answer) == ["A1", "A2", "A3", "A4", "A5"]


@pytest.mark.parametrize(
    ("param", "codes", "expected"),
    [
        (qp.DE_CLASS_CODE, ("C1",), ["A1", "A4"]),
        (qp.DE_CLASS_CODE, ("C2", "C3"), ["A2", "A3", "A5"]),
        (qp.DE_CLASS_CODE, ("C9",), []),
        (qp.DE_TYPE_CODE, ("T2",), ["A2"]),
        (qp.DE_PRACTICE_SETTING_CODE, ("P2",), ["A2"]),
        (qp.DE_PRACTICE_SETTING_CODE, ("P1", "P2"), ["A1", "A2", "A3", "A4", "A5"]),
        (qp.DE_FACILITY_CODE, ("F2",), ["A2"]),
        (qp.DE_FORMAT_CODE, ("FMT2",), ["A2", "A4"]),
    ],
)
def test_find_documents_codes(query: Q, param: str, codes: tuple[str, ...], expected: list[str]) -> None:
    answer = query(
        v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, (param, ql(*(code_value(c) for c in codes)))
    )
    assert query.keys(answer) == expected


def test_find_documents_code_of_another_scheme_does_not_match(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, (qp.DE_CLASS_CODE, ql("C1^^9.9.9")))
    assert query.keys(answer) == []


def test_find_documents_two_code_parameters_are_anded(query: Q) -> None:
    answer = query(
        v.SQ_FIND_DOCUMENTS,
        query.pid("A"),
        STATUS_BOTH,
        (qp.DE_CLASS_CODE, ql(code_value("C1"), code_value("C2"))),
        (qp.DE_FORMAT_CODE, ql(code_value("FMT2"))),
    )
    assert query.keys(answer) == ["A2", "A4"]


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        # From inclusive, To exclusive, at any precision (A1 20041224101010, A2 20050101000000,
        # A3 20060606060606, A4 20070101000000, A5 20080101000000)
        (((qp.DE_CREATION_TIME_FROM, "20041224101010"),), ["A1", "A2", "A3", "A4", "A5"]),
        (((qp.DE_CREATION_TIME_FROM, "20041224101011"),), ["A2", "A3", "A4", "A5"]),
        (((qp.DE_CREATION_TIME_TO, "20050101000000"),), ["A1"]),
        (((qp.DE_CREATION_TIME_TO, "20050101000001"),), ["A1", "A2"]),
        (((qp.DE_CREATION_TIME_FROM, "20041224"), (qp.DE_CREATION_TIME_TO, "20041225")), ["A1"]),
        (((qp.DE_CREATION_TIME_FROM, "2005"), (qp.DE_CREATION_TIME_TO, "2007")), ["A2", "A3"]),
        (((qp.DE_CREATION_TIME_FROM, "200412"),), ["A1", "A2", "A3", "A4", "A5"]),
        (((qp.DE_CREATION_TIME_FROM, "'2006'"),), ["A3", "A4", "A5"]),
        (((qp.DE_SERVICE_START_FROM, "200501010800"),), ["A2", "A3"]),
        (((qp.DE_SERVICE_START_TO, "2005"),), ["A1", "A4", "A5"]),
        (((qp.DE_SERVICE_STOP_FROM, "2007"),), ["A3"]),
        (((qp.DE_SERVICE_STOP_TO, "200501011000"),), ["A1", "A4", "A5"]),
        (((qp.DE_SERVICE_STOP_FROM, "20050101"), (qp.DE_SERVICE_STOP_TO, "20050102")), ["A2"]),
    ],
)
def test_find_documents_time_ranges(
    query: Q, slots: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, *slots)
    assert query.keys(answer) == expected


def test_find_documents_time_parameter_excludes_entries_without_that_time(query: Q) -> None:
    # A6 is On-Demand: it has no creationTime, so a creation time range never selects it
    on_demand = (qp.DE_TYPE, ql(v.DOC_ENTRY_ON_DEMAND))
    assert query.keys(query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, on_demand)) == ["A6"]
    answer = query(
        v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, on_demand, (qp.DE_CREATION_TIME_FROM, "1900")
    )
    assert query.keys(answer) == []


@pytest.mark.parametrize(
    ("param", "slots", "expected"),
    [
        # one slot: any of the values (OR)
        (qp.DE_EVENT_CODE, [("E2",)], ["A1"]),
        (qp.DE_EVENT_CODE, [("E1", "E2")], ["A1", "A2", "A3", "A4", "A5"]),
        # several slots: every slot must match (AND)
        (qp.DE_EVENT_CODE, [("E1",), ("E2",)], ["A1"]),
        (qp.DE_EVENT_CODE, [("E2",), ("E9",)], []),
        (qp.DE_CONFIDENTIALITY_CODE, [("R",)], ["A2", "A3"]),
        (qp.DE_CONFIDENTIALITY_CODE, [("N",), ("R",)], ["A2"]),
        (qp.DE_CONFIDENTIALITY_CODE, [("N", "R"), ("R",)], ["A2", "A3"]),
    ],
)
def test_find_documents_and_or_codes(
    query: Q, param: str, slots: list[tuple[str, ...]], expected: list[str]
) -> None:
    given = [(param, ql(*(code_value(c) for c in codes))) for codes in slots]
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, *given)
    assert query.keys(answer) == expected


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (("%Ford%",), ["A1", "A3", "A4", "A5"]),
        ((HARRISON,), ["A1", "A3", "A4", "A5"]),
        (("%Smith%",), ["A2"]),
        (("%Smith%", "%Ford%"), ["A1", "A2", "A3", "A4", "A5"]),
        (("222^Smit_^%",), ["A2"]),
        (("%smith%",), []),  # case-sensitive on every backend
        (("Smith",), []),  # no wildcard: the whole value must match
        (("%O*Br[i]en\\x%",), ["A2"]),  # GLOB/LIKE special characters are literal
        (("%O_Br[i]en_x%",), ["A2"]),
        (("%O?Br%",), []),
    ],
)
def test_find_documents_author_person(query: Q, patterns: tuple[str, ...], expected: list[str]) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_BOTH, (qp.DE_AUTHOR_PERSON, ql(*patterns)))
    assert query.keys(answer) == expected


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ((v.DOC_ENTRY_ON_DEMAND,), ["A6"]),
        ((v.DOC_ENTRY_STABLE,), ["A2", "A3", "A4", "A5"]),
        ((v.DOC_ENTRY_STABLE, v.DOC_ENTRY_ON_DEMAND), ["A2", "A3", "A6", "A4", "A5"]),
    ],
)
def test_find_documents_entry_type(query: Q, types: tuple[str, ...], expected: list[str]) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, (qp.DE_TYPE, ql(*types)))
    assert query.keys(answer) == expected


def test_find_documents_availability(query: Q) -> None:
    online = (qp.DE_AVAILABILITY, ql(v.DOCUMENT_AVAILABILITY_ONLINE))
    offline = (qp.DE_AVAILABILITY, ql(v.DOCUMENT_AVAILABILITY_OFFLINE))
    assert query.keys(query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, online)) == [
        "A2",
        "A3",
        "A4",
        "A5",
    ]
    assert query.keys(query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, offline)) == []


@pytest.mark.parametrize("level", ["1", "2"])
def test_find_documents_metadata_level(query: Q, level: str) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, (qp.METADATA_LEVEL, level))
    assert query.keys(answer) == ["A2", "A3", "A4", "A5"]


def test_find_documents_unknown_patient_is_an_empty_success(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, (qp.DE_PATIENT_ID, qs("999^^^&1.2.3.4&ISO")), STATUS_APPROVED)
    assert answer.status == "Success" and answer.objects == [] and answer.errors == []


def test_find_documents_follows_patient_merges(query: Q) -> None:
    # C1 was filed under the old id before the A40 merge, C2 under the surviving id after it
    for name in ("C_new", "C_old"):
        answer = query(v.SQ_FIND_DOCUMENTS, query.pid(name), STATUS_APPROVED)
        assert query.keys(answer) == ["C1", "C2"], name


def test_find_documents_other_patient(query: Q) -> None:
    assert query.keys(query(v.SQ_FIND_DOCUMENTS, query.pid("B"), STATUS_APPROVED)) == ["B1"]


def test_find_documents_home_community_id(world: World, query_schema: etree.XMLSchema) -> None:
    home = "urn:oid:1.2.3.4.5.6"
    q = Q(world, query_schema, home_community_id=home)
    leaf = q(v.SQ_FIND_DOCUMENTS, q.pid("B"), STATUS_APPROVED)
    objects = list(leaf.element.find(f"{_RIM}RegistryObjectList"))
    assert [o.get("home") for o in objects] == [home]
    refs = q(v.SQ_FIND_DOCUMENTS, q.pid("A"), STATUS_APPROVED, return_type="ObjectRef")
    assert [o.get("home") for o in refs.element.find(f"{_RIM}RegistryObjectList")] == [home] * 4
    # a request naming a home community (XCA routing) is served by the registry as it is
    asked = q(v.SQ_GET_DOCUMENTS, (qp.DE_UNIQUE_ID, ql(world.uids["B1"])), home="urn:oid:1.1.1")
    assert q.keys(asked) == ["B1"]


def test_find_documents_by_reference_id(query: Q) -> None:
    single = query(
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID, query.pid("A"), STATUS_BOTH, (qp.DE_REFERENCE_ID, ql(REF1))
    )
    assert query.keys(single) == ["A1", "A2"]
    either = query(
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID, query.pid("A"), STATUS_BOTH, (qp.DE_REFERENCE_ID, ql(REF2, "x"))
    )
    assert query.keys(either) == ["A2"]
    both = query(
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
        query.pid("A"),
        STATUS_BOTH,
        (qp.DE_REFERENCE_ID, ql(REF1)),
        (qp.DE_REFERENCE_ID, ql(REF2)),
    )
    assert query.keys(both) == ["A2"]
    filtered = query(
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
        query.pid("A"),
        STATUS_APPROVED,
        (qp.DE_REFERENCE_ID, ql(REF1)),
        (qp.DE_CLASS_CODE, ql(code_value("C2"))),
    )
    assert query.keys(filtered) == ["A2"]
    # identifiers match exactly, never as patterns
    assert (
        query.keys(
            query(
                v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
                query.pid("A"),
                STATUS_BOTH,
                (qp.DE_REFERENCE_ID, ql("R%")),
            )
        )
        == []
    )


# ------------------------------------------------------------------------------------------------
# FindSubmissionSets, FindFolders (ITI TF-2 §3.18.4.1.2.3.7.2-3)
# ------------------------------------------------------------------------------------------------
SS_APPROVED = (qp.SS_STATUS, ql(APPROVED))


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        ((), ["SS1", "SS2", "SS3", "SS4"]),
        (((qp.SS_SOURCE_ID, ql("1.2.3.98")),), ["SS2"]),
        (((qp.SS_SOURCE_ID, ql("1.2.3.98", "1.2.3.99")),), ["SS1", "SS2", "SS3", "SS4"]),
        (((qp.SS_SUBMISSION_TIME_FROM, "20210101120000"),), ["SS2", "SS3", "SS4"]),
        (((qp.SS_SUBMISSION_TIME_TO, "20210101120000"),), ["SS1"]),
        (((qp.SS_SUBMISSION_TIME_FROM, "2021"), (qp.SS_SUBMISSION_TIME_TO, "2023")), ["SS2", "SS3"]),
        (((qp.SS_AUTHOR_PERSON, qs("%Smith%")),), ["SS2"]),
        (((qp.SS_AUTHOR_PERSON, qs("%Hansen%")),), ["SS1", "SS3", "SS4"]),
        (((qp.SS_CONTENT_TYPE, ql(code_value("CT2"))),), ["SS2"]),
        (((qp.SS_CONTENT_TYPE, ql(code_value("CT9"))),), []),
    ],
)
def test_find_submission_sets(query: Q, slots: tuple[tuple[str, str], ...], expected: list[str]) -> None:
    pid = (qp.SS_PATIENT_ID, qs(query.world.patients["A"]))
    answer = query(v.SQ_FIND_SUBMISSION_SETS, pid, SS_APPROVED, *slots)
    assert query.keys(answer, RP) == expected
    assert answer.ids() == answer.ids(RP)


def test_find_submission_sets_status_and_objectref(query: Q) -> None:
    pid = (qp.SS_PATIENT_ID, qs(query.world.patients["B"]))
    assert query.keys(query(v.SQ_FIND_SUBMISSION_SETS, pid, (qp.SS_STATUS, ql(DEPRECATED)))) == []
    refs = query(v.SQ_FIND_SUBMISSION_SETS, pid, SS_APPROVED, return_type="ObjectRef")
    assert query.keys(refs, OR) == ["SS5"]


def test_find_submission_sets_author_is_single_valued(query: Q) -> None:
    pid = (qp.SS_PATIENT_ID, qs(query.world.patients["A"]))
    answer = query(v.SQ_FIND_SUBMISSION_SETS, pid, SS_APPROVED, (qp.SS_AUTHOR_PERSON, ql("%a%", "%b%")))
    assert answer.codes == [v.XDSStoredQueryParamNumber]


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        ((), ["FA"]),
        (((qp.FOLDER_CODE_LIST, ql(code_value("K2"))),), ["FA"]),
        (((qp.FOLDER_CODE_LIST, ql(code_value("K1"))), (qp.FOLDER_CODE_LIST, ql(code_value("K2")))), ["FA"]),
        (((qp.FOLDER_CODE_LIST, ql(code_value("K2"))), (qp.FOLDER_CODE_LIST, ql(code_value("K3")))), []),
        (((qp.FOLDER_LAST_UPDATE_FROM, "20210101120000"),), ["FA"]),
        (((qp.FOLDER_LAST_UPDATE_TO, "20210101120000"),), []),
        (((qp.FOLDER_LAST_UPDATE_FROM, "2020"), (qp.FOLDER_LAST_UPDATE_TO, "2022")), ["FA"]),
        (((qp.METADATA_LEVEL, "2"),), ["FA"]),
    ],
)
def test_find_folders(query: Q, slots: tuple[tuple[str, str], ...], expected: list[str]) -> None:
    pid = (qp.FOLDER_PATIENT_ID, qs(query.world.patients["A"]))
    answer = query(v.SQ_FIND_FOLDERS, pid, (qp.FOLDER_STATUS, ql(APPROVED)), *slots)
    assert query.keys(answer, RP) == expected


def test_find_folders_status(query: Q) -> None:
    pid = (qp.FOLDER_PATIENT_ID, qs(query.world.patients["B"]))
    assert query.keys(query(v.SQ_FIND_FOLDERS, pid, (qp.FOLDER_STATUS, ql(DEPRECATED)))) == []
    assert query.keys(
        query(v.SQ_FIND_FOLDERS, pid, (qp.FOLDER_STATUS, ql(APPROVED)), return_type="ObjectRef")
    ) == ["FB"]


# ------------------------------------------------------------------------------------------------
# GetAll (ITI TF-2 §3.18.4.1.2.3.7.4)
# ------------------------------------------------------------------------------------------------
ALL_STATUSES = (
    (qp.DE_STATUS, ql(APPROVED, DEPRECATED)),
    (qp.SS_STATUS, ql(APPROVED)),
    (qp.FOLDER_STATUS, ql(APPROVED)),
)


def test_get_all_returns_the_patients_objects_and_their_associations(query: Q) -> None:
    answer = query(v.SQ_GET_ALL, (qp.PATIENT_ID, qs(query.world.patients["A"])), *ALL_STATUSES)
    assert query.keys(answer, EO) == ["A1", "A2", "A3", "A4", "A5"]
    assert query.keys(answer, RP) == ["SS1", "SS2", "SS3", "SS4", "FA"]
    # every association from or to a returned object (A6, On-Demand, is not asked for, but the
    # associations from SS2 and FA to it are theirs)
    assert set(query.keys(answer, AS)) == {
        "SS1>A1",
        "SS1>A2",
        "SS2>A3",
        "SS2>A6",
        "SS2>FA",
        "FA>A3",
        "FA>A6",
        "SS2>FA>A3",
        "SS2>FA>A6",
        "SS3>A4",
        "rplc",
        "SS3>rplc",
        "SS4>A5",
        "apnd",
        "SS4>apnd",
    }


def test_get_all_filters(query: Q) -> None:
    pid = (qp.PATIENT_ID, qs(query.world.patients["A"]))
    approved = ((qp.DE_STATUS, ql(APPROVED)), *ALL_STATUSES[1:])
    assert query.keys(query(v.SQ_GET_ALL, pid, *approved), EO) == ["A2", "A3", "A4", "A5"]
    fmt = query(v.SQ_GET_ALL, pid, *ALL_STATUSES, (qp.DE_FORMAT_CODE, ql(code_value("FMT2"))))
    assert query.keys(fmt, EO) == ["A2", "A4"]
    conf = query(
        v.SQ_GET_ALL,
        pid,
        *ALL_STATUSES,
        (qp.DE_CONFIDENTIALITY_CODE, ql(code_value("N"))),
        (qp.DE_CONFIDENTIALITY_CODE, ql(code_value("R"))),
    )
    assert query.keys(conf, EO) == ["A2"]
    both = query(
        v.SQ_GET_ALL, pid, *ALL_STATUSES, (qp.DE_TYPE, ql(v.DOC_ENTRY_STABLE, v.DOC_ENTRY_ON_DEMAND))
    )
    assert query.keys(both, EO) == ["A1", "A2", "A3", "A6", "A4", "A5"]
    assert len(query.keys(both, AS)) == 15
    no_folders = query(v.SQ_GET_ALL, pid, *ALL_STATUSES[:2], (qp.FOLDER_STATUS, ql(DEPRECATED)))
    assert query.keys(no_folders, RP) == ["SS1", "SS2", "SS3", "SS4"]
    only_sets = query(
        v.SQ_GET_ALL, pid, (qp.DE_STATUS, ql(v.STATUS_SUBMITTED)), *ALL_STATUSES[1:], return_type="ObjectRef"
    )
    assert query.keys(only_sets) == [
        "SS1", "SS2", "SS3", "SS4", "FA",
        "SS1>A1", "SS1>A2", "SS2>A3", "SS2>A6", "SS2>FA", "FA>A3", "SS2>FA>A3", "FA>A6", "SS2>FA>A6",
        "SS3>A4", "SS3>rplc", "SS4>A5", "SS4>apnd",
    ]  # fmt: skip


def test_get_all_objectref(query: Q) -> None:
    leaf = query(v.SQ_GET_ALL, (qp.PATIENT_ID, qs(query.world.patients["B"])), *ALL_STATUSES)
    refs = query(
        v.SQ_GET_ALL, (qp.PATIENT_ID, qs(query.world.patients["B"])), *ALL_STATUSES, return_type="ObjectRef"
    )
    assert refs.ids(OR) == leaf.ids() and len(leaf.ids()) == 7  # B1, SS5, FB, 4 associations


# ------------------------------------------------------------------------------------------------
# GetDocuments, GetFolders, GetAssociations, GetDocumentsAndAssociations (§3.18.4.1.2.3.7.5-8)
# ------------------------------------------------------------------------------------------------
def test_get_documents_by_uuid_unique_id_and_logical_id(query: Q, world: World) -> None:
    by_uuid = query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql(world.uuids["A1"], world.uuids["A6"])))
    assert query.keys(by_uuid) == ["A1", "A6"]  # any status, any type
    by_values = query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql(world.uuids["A2"]), qs(world.uuids["A3"])))
    assert query.keys(by_values) == ["A2", "A3"]
    by_uid = query(v.SQ_GET_DOCUMENTS, (qp.DE_UNIQUE_ID, ql(world.uids["A4"])))
    assert query.keys(by_uid) == ["A4"]
    by_lid = query(v.SQ_GET_DOCUMENTS, (qp.DE_LOGICAL_ID, ql(world.uuids["A5"])), (qp.METADATA_LEVEL, "2"))
    assert query.keys(by_lid) == ["A5"]
    refs = query(
        v.SQ_GET_DOCUMENTS, (qp.DE_UNIQUE_ID, ql(world.uids["A4"], "1.2.3.nothing")), return_type="ObjectRef"
    )
    assert query.keys(refs, OR) == ["A4"]
    assert query.keys(query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql("urn:uuid:0")))) == []
    # UUIDs are case-insensitive on input (RFC 4122 §3)
    upper = "urn:uuid:" + world.uuids["A1"].removeprefix("urn:uuid:").upper()
    assert query.keys(query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql(upper)))) == ["A1"]


def test_get_documents_of_merged_patients_is_one_patient(query: Q, world: World) -> None:
    answer = query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql(world.uuids["C1"], world.uuids["C2"])))
    assert query.keys(answer) == ["C1", "C2"]


def test_get_folders(query: Q, world: World) -> None:
    assert query.keys(query(v.SQ_GET_FOLDERS, (qp.FOLDER_ENTRY_UUID, ql(world.uuids["FA"])))) == ["FA"]
    assert query.keys(query(v.SQ_GET_FOLDERS, (qp.FOLDER_UNIQUE_ID, ql(world.uids["FA"])))) == ["FA"]
    assert query.keys(query(v.SQ_GET_FOLDERS, (qp.FOLDER_LOGICAL_ID, ql(world.uuids["FA"])))) == ["FA"]
    refs = query(
        v.SQ_GET_FOLDERS,
        (qp.FOLDER_UNIQUE_ID, ql(world.uids["FA"], world.uids["FB"])),
        return_type="ObjectRef",
    )
    assert query.keys(refs) == ["FA", "FB"]


def test_get_associations(query: Q, world: World) -> None:
    answer = query(v.SQ_GET_ASSOCIATIONS, (qp.UUID, ql(world.uuids["A1"])))
    assert query.keys(answer, AS) == ["SS1>A1", "rplc"]
    assert answer.ids() == answer.ids(AS)
    several = query(
        v.SQ_GET_ASSOCIATIONS, (qp.UUID, ql(world.uuids["A1"], world.uuids["SS4"])), return_type="ObjectRef"
    )
    assert query.keys(several) == ["SS1>A1", "rplc", "SS4>A5", "SS4>apnd"]
    approved = query(
        v.SQ_GET_ASSOCIATIONS, (qp.UUID, ql(world.uuids["A1"])), (qp.ASSOCIATION_STATUS, ql(APPROVED))
    )
    assert query.keys(approved) == ["SS1>A1", "rplc"]
    deprecated = query(
        v.SQ_GET_ASSOCIATIONS, (qp.UUID, ql(world.uuids["A1"])), (qp.ASSOCIATION_STATUS, ql(DEPRECATED))
    )
    assert query.keys(deprecated) == []


def test_get_documents_and_associations(query: Q, world: World) -> None:
    answer = query(
        v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, (qp.DE_UNIQUE_ID, ql(world.uids["A2"], world.uids["A3"]))
    )
    assert query.keys(answer, EO) == ["A2", "A3"]
    assert query.keys(answer, AS) == ["SS1>A2", "SS2>A3", "FA>A3", "apnd"]
    by_uuid = query(
        v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS,
        (qp.DE_ENTRY_UUID, ql(world.uuids["B1"])),
        return_type="ObjectRef",
    )
    assert query.keys(by_uuid) == ["B1", "SS5>B1", "FB>B1"]


# ------------------------------------------------------------------------------------------------
# GetSubmissionSets, GetSubmissionSetAndContents, GetFolderAndContents (§3.18.4.1.2.3.7.9-11)
# ------------------------------------------------------------------------------------------------
def test_get_submission_sets(query: Q, world: World) -> None:
    answer = query(v.SQ_GET_SUBMISSION_SETS, (qp.UUID, ql(world.uuids["A1"], world.uuids["A4"])))
    assert query.keys(answer, RP) == ["SS1", "SS3"]
    assert query.keys(answer, AS) == ["SS1>A1", "SS3>A4"]
    folder = query(v.SQ_GET_SUBMISSION_SETS, (qp.UUID, ql(world.uuids["FA"])), return_type="ObjectRef")
    assert query.keys(folder) == ["SS2", "SS2>FA"]


def test_get_submission_set_and_contents(query: Q, world: World) -> None:
    one = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (qp.SS_UNIQUE_ID, qs(world.uids["SS1"])))
    assert query.keys(one) == ["SS1", "A1", "A2", "SS1>A1", "SS1>A2"]
    folder = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (qp.SS_ENTRY_UUID, qs(world.uuids["SS2"])))
    assert query.keys(folder, RP) == ["SS2", "FA"]
    assert query.keys(folder, EO) == ["A3"]  # A6 is On-Demand
    assert query.keys(folder, AS) == ["SS2>A3", "SS2>FA", "FA>A3", "SS2>FA>A3"]
    every_type = query(
        v.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
        (qp.SS_ENTRY_UUID, qs(world.uuids["SS2"])),
        (qp.DE_TYPE, ql(v.DOC_ENTRY_STABLE, v.DOC_ENTRY_ON_DEMAND)),
        return_type="ObjectRef",
    )
    assert len(every_type.ids(OR)) == 2 + 2 + 7
    relation = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (qp.SS_ENTRY_UUID, qs(world.uuids["SS3"])))
    # rplc's target A1 is not in SS3: neither rplc nor SS3's HasMember to it is returned
    assert query.keys(relation) == ["SS3", "A4", "SS3>A4"]


def test_get_submission_set_and_contents_filters(query: Q, world: World) -> None:
    ss1 = (qp.SS_ENTRY_UUID, qs(world.uuids["SS1"]))
    conf = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, ss1, (qp.DE_CONFIDENTIALITY_CODE, ql(code_value("R"))))
    assert query.keys(conf) == ["SS1", "A2", "SS1>A2"]
    fmt = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, ss1, (qp.DE_FORMAT_CODE, ql(code_value("FMT1"))))
    assert query.keys(fmt) == ["SS1", "A1", "SS1>A1"]
    none = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, ss1, (qp.DE_FORMAT_CODE, ql(code_value("FMT9"))))
    assert query.keys(none) == ["SS1"]
    missing = query(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (qp.SS_UNIQUE_ID, qs("1.2.3.404")))
    assert query.keys(missing) == []


def test_get_folder_and_contents(query: Q, world: World) -> None:
    fa = query(v.SQ_GET_FOLDER_AND_CONTENTS, (qp.FOLDER_ENTRY_UUID, qs(world.uuids["FA"])))
    assert query.keys(fa) == ["FA", "A3", "FA>A3"]
    both = query(
        v.SQ_GET_FOLDER_AND_CONTENTS,
        (qp.FOLDER_UNIQUE_ID, qs(world.uids["FA"])),
        (qp.DE_TYPE, ql(v.DOC_ENTRY_STABLE, v.DOC_ENTRY_ON_DEMAND)),
        return_type="ObjectRef",
    )
    assert query.keys(both) == ["FA", "A3", "A6", "FA>A3", "FA>A6"]
    conf = query(
        v.SQ_GET_FOLDER_AND_CONTENTS,
        (qp.FOLDER_ENTRY_UUID, qs(world.uuids["FA"])),
        (qp.DE_CONFIDENTIALITY_CODE, ql(code_value("N"))),
    )
    assert query.keys(conf) == ["FA"]
    fmt = query(
        v.SQ_GET_FOLDER_AND_CONTENTS,
        (qp.FOLDER_ENTRY_UUID, qs(world.uuids["FA"])),
        (qp.DE_FORMAT_CODE, ql(code_value("FMT1"))),
    )
    assert query.keys(fmt) == ["FA", "A3", "FA>A3"]


# ------------------------------------------------------------------------------------------------
# GetFoldersForDocument, GetRelatedDocuments (§3.18.4.1.2.3.7.12-13)
# ------------------------------------------------------------------------------------------------
def test_get_folders_for_document(query: Q, world: World) -> None:
    assert query.keys(query(v.SQ_GET_FOLDERS_FOR_DOCUMENT, (qp.DE_ENTRY_UUID, qs(world.uuids["A3"])))) == [
        "FA"
    ]
    by_uid = query(
        v.SQ_GET_FOLDERS_FOR_DOCUMENT, (qp.DE_UNIQUE_ID, qs(world.uids["B1"])), return_type="ObjectRef"
    )
    assert query.keys(by_uid) == ["FB"]
    assert query.keys(query(v.SQ_GET_FOLDERS_FOR_DOCUMENT, (qp.DE_ENTRY_UUID, qs(world.uuids["A1"])))) == []


def test_get_related_documents(query: Q, world: World) -> None:
    types = (qp.ASSOCIATION_TYPES, ql(v.HAS_MEMBER, v.RPLC))
    original = query(v.SQ_GET_RELATED_DOCUMENTS, (qp.DE_UNIQUE_ID, qs(world.uids["A1"])), types)
    assert query.keys(original) == ["A1", "A4", "rplc"]
    replacement = query(v.SQ_GET_RELATED_DOCUMENTS, (qp.DE_ENTRY_UUID, qs(world.uuids["A4"])), types)
    assert query.keys(replacement) == ["A1", "A4", "rplc"]
    appended = query(
        v.SQ_GET_RELATED_DOCUMENTS,
        (qp.DE_ENTRY_UUID, qs(world.uuids["A2"])),
        (qp.ASSOCIATION_TYPES, ql(v.APND)),
        return_type="ObjectRef",
    )
    assert query.keys(appended) == ["A2", "A5", "apnd"]
    # HasMember from a folder or submission set relates no document: nothing at all is returned
    assert (
        query.keys(query(v.SQ_GET_RELATED_DOCUMENTS, (qp.DE_ENTRY_UUID, qs(world.uuids["A3"])), types)) == []
    )
    other_type = query(
        v.SQ_GET_RELATED_DOCUMENTS,
        (qp.DE_ENTRY_UUID, qs(world.uuids["A2"])),
        (qp.ASSOCIATION_TYPES, ql(v.XFRM)),
    )
    assert query.keys(other_type) == []
    unknown = query(v.SQ_GET_RELATED_DOCUMENTS, (qp.DE_ENTRY_UUID, qs("urn:uuid:0")), types)
    assert query.keys(unknown) == []


# ------------------------------------------------------------------------------------------------
# ITI-51 multi-patient queries (ITI TF-2 §3.51.4.1.2.3)
# ------------------------------------------------------------------------------------------------
def test_find_documents_for_multiple_patients(query: Q, world: World) -> None:
    pids = (qp.DE_PATIENT_ID, ql(world.patients["A"], world.patients["B"]))
    c1 = (qp.DE_CLASS_CODE, ql(code_value("C1")))
    answer = query(v.SQ_FIND_DOCUMENTS_MPQ, pids, STATUS_APPROVED, c1)
    assert query.keys(answer) == ["A4", "B1"]  # LeafClass across patients is what ITI-51 is for
    everyone = query(v.SQ_FIND_DOCUMENTS_MPQ, STATUS_APPROVED, c1, return_type="ObjectRef")
    assert query.keys(everyone) == ["A4", "B1", "C1", "C2"]
    merged = query(v.SQ_FIND_DOCUMENTS_MPQ, (qp.DE_PATIENT_ID, ql(world.patients["C_old"])), STATUS_APPROVED)
    assert query.keys(merged) == ["C1", "C2"]
    event = query(
        v.SQ_FIND_DOCUMENTS_MPQ,
        STATUS_APPROVED,
        (qp.DE_EVENT_CODE, ql(code_value("E2"))),
        STATUS_BOTH[:0] or STATUS_APPROVED[:0] or (qp.DE_FACILITY_CODE, ql(code_value("F1"))),
    )
    assert query.keys(event) == []  # A1 (the only E2) is deprecated
    missing = query(v.SQ_FIND_DOCUMENTS_MPQ, STATUS_APPROVED)
    assert missing.codes == [v.XDSStoredQueryMissingParam]


def test_find_folders_for_multiple_patients(query: Q, world: World) -> None:
    status = (qp.FOLDER_STATUS, ql(APPROVED))
    pids = (qp.FOLDER_PATIENT_ID, ql(world.patients["A"], world.patients["B"]))
    assert query.keys(query(v.SQ_FIND_FOLDERS_MPQ, pids, status)) == ["FA", "FB"]
    assert query.keys(query(v.SQ_FIND_FOLDERS_MPQ, status, (qp.FOLDER_CODE_LIST, ql(code_value("K2"))))) == [
        "FA"
    ]
    assert query.keys(query(v.SQ_FIND_FOLDERS_MPQ, status, (qp.FOLDER_LAST_UPDATE_TO, "2020"), pids)) == [
        "FB"
    ]
    assert query(v.SQ_FIND_FOLDERS_MPQ, status).codes == [v.XDSStoredQueryMissingParam]


def test_find_documents_by_reference_id_for_multiple_patients(query: Q, world: World) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ, STATUS_BOTH, (qp.DE_REFERENCE_ID, ql(REF1)))
    assert query.keys(answer) == ["A1", "A2", "B1"]
    only_b = query(
        v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ,
        STATUS_BOTH,
        (qp.DE_REFERENCE_ID, ql(REF1)),
        (qp.DE_PATIENT_ID, ql(world.patients["B"])),
    )
    assert query.keys(only_b) == ["B1"]
    assert query(v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ, STATUS_BOTH).codes == [v.XDSStoredQueryMissingParam]


# ------------------------------------------------------------------------------------------------
# errors (ITI TF-2 §3.18.4.1.3, ITI TF-3 Table 4.2.4.1-2)
# ------------------------------------------------------------------------------------------------
def test_unknown_stored_query(query: Q) -> None:
    answer = query("urn:uuid:00000000-0000-0000-0000-000000000000", STATUS_APPROVED)
    assert answer.status == "Failure" and answer.codes == [v.XDSUnknownStoredQuery]
    assert answer.objects == []


@pytest.mark.parametrize(
    ("query_id", "slots", "location"),
    [
        (v.SQ_FIND_DOCUMENTS, (STATUS_APPROVED,), qp.DE_PATIENT_ID),
        (v.SQ_FIND_DOCUMENTS, (("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'"),), qp.DE_STATUS),
        (
            v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
            (("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'"), STATUS_APPROVED),
            qp.DE_REFERENCE_ID,
        ),
        (v.SQ_FIND_SUBMISSION_SETS, ((qp.SS_STATUS, ql(APPROVED)),), qp.SS_PATIENT_ID),
        (v.SQ_FIND_FOLDERS, ((qp.FOLDER_PATIENT_ID, "'1^^^&1.2&ISO'"),), qp.FOLDER_STATUS),
        (
            v.SQ_GET_ALL,
            ((qp.PATIENT_ID, "'1^^^&1.2&ISO'"), STATUS_APPROVED, (qp.SS_STATUS, ql(APPROVED))),
            qp.FOLDER_STATUS,
        ),
        (v.SQ_GET_DOCUMENTS, (), qp.DE_ENTRY_UUID),
        (v.SQ_GET_FOLDERS, (), qp.FOLDER_ENTRY_UUID),
        (v.SQ_GET_ASSOCIATIONS, (), qp.UUID),
        (v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, (), qp.DE_ENTRY_UUID),
        (v.SQ_GET_SUBMISSION_SETS, (), qp.UUID),
        (v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (), qp.SS_ENTRY_UUID),
        (v.SQ_GET_FOLDER_AND_CONTENTS, (), qp.FOLDER_ENTRY_UUID),
        (v.SQ_GET_FOLDERS_FOR_DOCUMENT, (), qp.DE_ENTRY_UUID),
        (v.SQ_GET_RELATED_DOCUMENTS, ((qp.DE_ENTRY_UUID, "'urn:uuid:1'"),), qp.ASSOCIATION_TYPES),
        (v.SQ_GET_RELATED_DOCUMENTS, ((qp.ASSOCIATION_TYPES, ql(v.RPLC)),), qp.DE_ENTRY_UUID),
    ],
)
def test_missing_parameter(
    query: Q, query_id: str, slots: tuple[tuple[str, str], ...], location: str
) -> None:
    answer = query(query_id, *slots)
    assert answer.status == "Failure"
    assert (v.XDSStoredQueryMissingParam, v.SEVERITY_ERROR, location) in answer.errors


def test_an_empty_slot_is_a_missing_parameter(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), (qp.DE_STATUS, "()"))
    assert answer.codes == [v.XDSStoredQueryMissingParam]


@pytest.mark.parametrize(
    "slots",
    [
        # a single-valued parameter in two slots, or with two values
        (
            ("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'"),
            ("$XDSDocumentEntryPatientId", "'2^^^&1.2&ISO'"),
            STATUS_APPROVED,
        ),
        (("$XDSDocumentEntryPatientId", "('1^^^&1.2&ISO', '2^^^&1.2&ISO')"), STATUS_APPROVED),
        (("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'", "'2^^^&1.2&ISO'"), STATUS_APPROVED),
        (
            ("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'"),
            STATUS_APPROVED,
            (qp.DE_CREATION_TIME_FROM, "(2004, 2005)"),
        ),
        # a multi-valued parameter without AND semantics in two slots
        (("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'"), STATUS_APPROVED, STATUS_APPROVED),
        (
            ("$XDSDocumentEntryPatientId", "'1^^^&1.2&ISO'"),
            STATUS_APPROVED,
            (qp.DE_CLASS_CODE, ql("a^^b")),
            (qp.DE_CLASS_CODE, ql("c^^d")),
        ),
    ],
)
def test_parameter_number(query: Q, slots: tuple[tuple[str, ...], ...]) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, *slots)
    assert answer.status == "Failure" and answer.codes == [v.XDSStoredQueryParamNumber]


def test_alternatives_given_together_is_parameter_number(query: Q, world: World) -> None:
    answer = query(
        v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql(world.uuids["A1"])), (qp.DE_UNIQUE_ID, ql(world.uids["A1"]))
    )
    assert answer.codes == [v.XDSStoredQueryParamNumber]
    single = query(
        v.SQ_GET_FOLDER_AND_CONTENTS, (qp.FOLDER_ENTRY_UUID, ql(world.uuids["FA"], world.uuids["FB"]))
    )
    assert single.codes == [v.XDSStoredQueryParamNumber]


@pytest.mark.parametrize(
    ("slot", "location"),
    [
        ((qp.DE_CLASS_CODE, "('C1^^1.2.3', 'a^^')"), qp.DE_CLASS_CODE),
        ((qp.DE_PRACTICE_SETTING_CODE, "('Dialysis')"), qp.DE_PRACTICE_SETTING_CODE),
        ((qp.DE_EVENT_CODE, "('^^1.2')"), qp.DE_EVENT_CODE),
        ((qp.DE_CREATION_TIME_FROM, "'2004-12-24'"), qp.DE_CREATION_TIME_FROM),
        ((qp.DE_SERVICE_STOP_TO, "20041332"), qp.DE_SERVICE_STOP_TO),
        ((qp.DE_TYPE, "('stable')"), qp.DE_TYPE),
        ((qp.METADATA_LEVEL, "3"), qp.METADATA_LEVEL),
        ((qp.DE_FORMAT_CODE, "('x^^y'"), qp.DE_FORMAT_CODE),
        ((qp.DE_AUTHOR_PERSON, "'unterminated"), qp.DE_AUTHOR_PERSON),
        # '$' in a pattern also matches before a final newline; digits are ASCII digits only
        ((qp.DE_CREATION_TIME_FROM, "'20041224\n'"), qp.DE_CREATION_TIME_FROM),
        ((qp.DE_CREATION_TIME_TO, "'\u0661\u0662\u0663\u0664'"), qp.DE_CREATION_TIME_TO),
        ((qp.DE_SERVICE_START_FROM, "'\uff12\uff10\uff10\uff14'"), qp.DE_SERVICE_START_FROM),
        ((qp.METADATA_LEVEL, "'\u0661'"), qp.METADATA_LEVEL),
        # an empty list on an optional filter would silently widen the answer
        ((qp.DE_CLASS_CODE, "()"), qp.DE_CLASS_CODE),
        ((qp.DE_AUTHOR_PERSON, "( )"), qp.DE_AUTHOR_PERSON),
    ],
)
def test_malformed_values_are_registry_errors_naming_the_parameter(
    query: Q, slot: tuple[str, str], location: str
) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, slot)
    assert answer.status == "Failure"
    assert answer.errors == [(v.XDSRegistryError, v.SEVERITY_ERROR, location)]
    context = answer.element.find(".//{" + v.NS_RS + "}RegistryError").get("codeContext")
    assert location in context


def test_malformed_status_and_patient_id(query: Q) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, (qp.DE_PATIENT_ID, "'not a cx'"), (qp.DE_STATUS, ql("Approved")))
    assert answer.codes == [v.XDSRegistryError, v.XDSRegistryError]
    assert {loc for _, _, loc in answer.errors} == {qp.DE_PATIENT_ID, qp.DE_STATUS}


@pytest.mark.parametrize("return_type", ["RegistryObject", "LeafClassWithRepositoryItem"])
def test_unsupported_return_type(query: Q, return_type: str) -> None:
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, return_type=return_type)
    assert answer.codes == [v.XDSRegistryError]


def test_request_that_is_not_an_adhoc_query(world: World, query_schema: etree.XMLSchema) -> None:
    engine = world.engine_for()
    wrong = etree.Element(f"{{{v.NS_LCM}}}SubmitObjectsRequest")
    answer = ask(engine, query_schema, wrong)
    assert answer.codes == [v.XDSRegistryError]
    no_query = request(v.SQ_FIND_DOCUMENTS)
    no_query.remove(no_query[1])
    assert ask(engine, query_schema, no_query).codes == [v.XDSRegistryError]


def test_unknown_parameter_is_a_warning(query: Q) -> None:
    answer = query(
        v.SQ_FIND_DOCUMENTS,
        query.pid("B"),
        STATUS_APPROVED,
        ("$XDSDocumentEntryPracticeSettingCodeScheme", ql("old style")),
    )
    assert answer.status == "Success" and query.keys(answer) == ["B1"]
    assert answer.warnings == [v.XDSRegistryError] and answer.codes == []


def test_leafclass_spanning_patients_is_refused(query: Q, world: World) -> None:
    both = ql(world.uuids["A2"], world.uuids["B1"])
    answer = query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, both))
    assert answer.status == "Failure" and answer.codes == [v.XDSResultNotSinglePatient]
    assert answer.objects == []
    refs = query(v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, both), return_type="ObjectRef")
    assert query.keys(refs) == ["A2", "B1"]
    sets = query(v.SQ_GET_SUBMISSION_SETS, (qp.UUID, both))
    assert sets.codes == [v.XDSResultNotSinglePatient]
    folders = query(v.SQ_GET_FOLDERS, (qp.FOLDER_UNIQUE_ID, ql(world.uids["FA"], world.uids["FB"])))
    assert folders.codes == [v.XDSResultNotSinglePatient]


def test_too_many_results(world: World, query_schema: etree.XMLSchema) -> None:
    small = Q(world, query_schema, max_results=3)
    for return_type in ("LeafClass", "ObjectRef"):
        answer = small(v.SQ_FIND_DOCUMENTS, small.pid("A"), STATUS_APPROVED, return_type=return_type)
        assert answer.status == "Failure" and answer.codes == [v.XDSTooManyResults] and answer.objects == []
    # the limit counts every object of the answer, associations included
    contents = small(v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (qp.SS_ENTRY_UUID, qs(world.uuids["SS1"])))
    assert contents.codes == [v.XDSTooManyResults]
    within = small(
        v.SQ_FIND_DOCUMENTS, small.pid("A"), STATUS_APPROVED, (qp.DE_CLASS_CODE, ql(code_value("C2")))
    )
    assert small.keys(within) == ["A2", "A5"]


@pytest.mark.parametrize(("flag", "ok"), [("true", True), ("false", True), ("1", True), ("yes", False)])
def test_return_composed_objects(world: World, query_schema: etree.XMLSchema, flag: str, ok: bool) -> None:
    req = request(v.SQ_GET_DOCUMENTS, (qp.DE_UNIQUE_ID, ql(world.uids["B1"])))
    req[0].set("returnComposedObjects", flag)
    answer = ask(world.engine_for(), query_schema, req)
    if not ok:
        assert answer.codes == [v.XDSRegistryError]
        return
    # an XDS object's metadata is its classifications and identifiers: always returned with it
    [doc] = answer.element.find(f"{_RIM}RegistryObjectList")
    assert doc.findall(f"{_RIM}Classification") and doc.findall(f"{_RIM}ExternalIdentifier")


def test_value_lists_read_quickly_read_as_the_careful_reader_does() -> None:
    """The regular-expression reading of value lists (the common case) and the character-by-character
    one (which explains errors) agree on every input: same values, or the same error."""

    def read(scan, text: str) -> object:  # type: ignore[no-untyped-def]
        try:
            return scan(text)
        except qp.MalformedValue as exc:
            return ("error", str(exc))

    rng = random.Random(18)
    pieces = ["'", "''", ",", " ", "a", "1", "(", ")", "\t", "é", "^", "&", "%"]
    texts = ["", " ", "'a'", "'a','b'", " 'a' , 'b' ", "1, 2", "'it''s'", "'a',", ",", "a b", "'a' 'b'", "'a"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 9))) for _ in range(20000)]
    for text in texts:
        assert read(qp._scan_list, text) == read(qp._scan_list_slowly, text), text


def test_long_id_lists_are_asked_in_chunks_with_the_same_answers(
    query: Q, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids beyond one IN list (1,000) are asked in chunks; the answers are those of one list:
    the same objects, once each, in registration order."""
    from xds.registry import stored_query

    u = world.uuids
    cases = [
        (v.SQ_GET_DOCUMENTS, (qp.DE_ENTRY_UUID, ql(u["A3"], u["A1"], u["A2"], u["A1"]))),
        (v.SQ_GET_ASSOCIATIONS, (qp.UUID, ql(u["A1"], u["SS4"], u["A3"]))),
        (v.SQ_GET_SUBMISSION_SETS, (qp.UUID, ql(u["A1"], u["A4"], u["FA"]))),
        (v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS, (qp.DE_UNIQUE_ID, ql(world.uids["A2"], world.uids["A3"]))),
        (v.SQ_GET_SUBMISSION_SET_AND_CONTENTS, (qp.SS_ENTRY_UUID, qs(u["SS2"]))),
        (
            v.SQ_GET_ALL,
            (qp.PATIENT_ID, qs(world.patients["A"])),
            (qp.DE_STATUS, ql(APPROVED)),
            (qp.SS_STATUS, ql(APPROVED)),
            (qp.FOLDER_STATUS, ql(APPROVED)),
        ),
    ]
    whole = [query(qid, *slots, return_type="ObjectRef") for qid, *slots in cases]
    monkeypatch.setattr(stored_query, "_CHUNK", 1)
    chunked = [query(qid, *slots, return_type="ObjectRef") for qid, *slots in cases]
    for one, many in zip(whole, chunked, strict=True):
        assert one.status == many.status == "Success"
        assert one.ids() and many.ids() == one.ids()


@pytest.mark.parametrize(
    ("slots", "location"),
    [
        (((qp.DE_CLASS_CODE, ql(*(f"c{i}^^1.2" for i in range(qp.MAX_VALUES + 1)))),), qp.DE_CLASS_CODE),
        (((qp.DE_AUTHOR_PERSON, ql(*(f"%{i}%" for i in range(qp.MAX_PATTERNS + 1)))),), qp.DE_AUTHOR_PERSON),
        (tuple((qp.DE_EVENT_CODE, ql(f"e{i}^^1.2")) for i in range(qp.MAX_AND_SLOTS + 1)), qp.DE_EVENT_CODE),
        (
            tuple(
                (name, ql(*(f"c{i}^^1.2" for i in range(qp.MAX_VALUES))))
                for name in (qp.DE_CLASS_CODE, qp.DE_TYPE_CODE, qp.DE_FORMAT_CODE)
            ),
            v.STORED_QUERY_NAMES[v.SQ_FIND_DOCUMENTS],
        ),
    ],
    ids=["values", "patterns", "and-slots", "request"],
)
def test_requests_past_the_bounds_are_refused_naming_the_parameter(
    query: Q, slots: tuple[tuple[str, str], ...], location: str
) -> None:
    """ITI TF-2 sets no bound, but each value is a bound SQL parameter (SQLite takes 32,766), each
    AND slot a subquery and each author pattern a scan of every candidate's authors: a request past
    the bounds is refused up front rather than failing in the database or holding the worker."""
    answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, *slots)
    assert answer.status == "Failure"
    assert answer.errors == [(v.XDSRegistryError, v.SEVERITY_ERROR, location)]


def test_lists_up_to_the_bounds_are_answered(query: Q) -> None:
    """The longest list, the most AND slots and the most author patterns taken are answered
    (SQLite refuses an expression tree deeper than 1,000, so these must not nest that deep)."""
    codes = (qp.DE_CLASS_CODE, ql(*(f"c{i}^^1.2" for i in range(qp.MAX_VALUES - 1)), "C1^^1.2.3"))
    events = tuple((qp.DE_EVENT_CODE, ql("E1^^1.2.3", f"e{i}^^1.2")) for i in range(qp.MAX_AND_SLOTS))
    authors = (qp.DE_AUTHOR_PERSON, ql(*(f"%{i}%" for i in range(qp.MAX_PATTERNS - 1)), "%"))
    for slots in ((codes,), events, (authors,)):
        answer = query(v.SQ_FIND_DOCUMENTS, query.pid("A"), STATUS_APPROVED, *slots)
        assert answer.status == "Success", answer.errors


def test_a_query_running_past_its_time_limit_is_stopped_with_a_registry_error(
    world: World, query_schema: etree.XMLSchema, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads run on the worker's event loop: on SQLite a query still running after
    ``[registry] query_time_limit_s`` is interrupted, and answered as an XDSRegistryError that
    says so, rather than holding every other request of the worker. (PostgreSQL has the server's
    statement_timeout.)"""
    if backend != "sqlite":
        pytest.skip("the time limit is SQLite's progress handler; PostgreSQL uses statement_timeout")
    from xds import database

    monkeypatch.setattr(database, "_PROGRESS_STEPS", 1)  # look at the clock at every step
    slow = Q(world, query_schema, time_limit=1e-9)  # every query is past it at once
    answer = slow(v.SQ_FIND_DOCUMENTS, slow.pid("A"), STATUS_APPROVED)
    assert answer.status == "Failure"
    assert answer.codes == [v.XDSRegistryError]
    in_time = Q(world, query_schema, time_limit=60)
    assert in_time(v.SQ_FIND_DOCUMENTS, in_time.pid("A"), STATUS_APPROVED).status == "Success"
