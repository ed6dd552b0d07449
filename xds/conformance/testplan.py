"""The NIST test kit's test plan grammar: tests, sections (``testplan.xml``) and their steps.

A test is a folder (``tests/<id>/``, or one of the data-load folders) whose ``index.idx`` lists its
sections in order; without an index every sub-folder holding a ``testplan.xml`` is a section, and
a folder that is its own test plan is one section named ``""``. Each ``testplan.xml`` has
``<TestStep id>`` elements with expectations (``ExpectedStatus``, ``ExpectedErrorCode``,
``ExpectedErrorMessage``) and one transaction element whose children say what to send and how to
prepare it (the grammar of the NIST XDS Toolkit's test plans, ``toolkitx/testkit`` in iheos-toolkit2).

Everything a replayer needs is parsed into frozen dataclasses; what later stages interpret
themselves (``ExpectedContents``, ``Assertions``, inline ``Metadata``) is kept as raw elements.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from lxml import etree

from xds import safexml

# --- transaction kinds (the element name inside a TestStep) --------------------------------------
REGISTER: Final = "RegisterTransaction"
PROVIDE_AND_REGISTER: Final = "ProvideAndRegisterTransaction"
STORED_QUERY: Final = "StoredQueryTransaction"
RETRIEVE: Final = "RetrieveTransaction"
PATIENT_IDENTITY_FEED: Final = "PatientIdentityFeedTransaction"
NULL: Final = "NullTransaction"
METADATA_UPDATE: Final = "MuTransaction"
RESTRICTED_UPDATE: Final = "RmuTransaction"
REMOVE_METADATA: Final = "RemoveMetadataTransaction"
XC_QUERY: Final = "XCQTransaction"
XC_RETRIEVE: Final = "XCRTransaction"
IG_QUERY: Final = "IGQTransaction"
IG_RETRIEVE: Final = "IGRTransaction"
KNOWN_TRANSACTIONS: Final = frozenset(
    {
        REGISTER,
        PROVIDE_AND_REGISTER,
        STORED_QUERY,
        RETRIEVE,
        PATIENT_IDENTITY_FEED,
        NULL,
        METADATA_UPDATE,
        RESTRICTED_UPDATE,
        REMOVE_METADATA,
        XC_QUERY,
        XC_RETRIEVE,
        IG_QUERY,
        IG_RETRIEVE,
    }
)

# --- UseId sections (where an earlier step's value is looked up) ----------------------------------
ASSIGNED_UIDS: Final = "AssignedUids"
ASSIGNED_UUIDS: Final = "AssignedUuids"
ASSIGNED_PATIENT_ID: Final = "AssignedPatientId"
ASSIGNED_SOURCE_ID: Final = "AssignedSourceId"

# --- Report sections (what a Report XPath is evaluated against) -----------------------------------
INPUT_METADATA: Final = "InputMetadata"
RESULT: Final = "Result"
# UseReport section="THIS": the section the using step is in
THIS_SECTION: Final = "THIS"

# folders of the kit that hold tests, searched in this order by load_test
TEST_FOLDERS: Final = (
    "tests",
    "testdata-registry",
    "testdata-repository",
    "testdata",
    "testdata-xdr",
    "utilities",
    "selftest",
    "examples",
    "xcpd",
)

_STEP_TAGS = frozenset({"TestStep", "testStep"})
_STEP_LEVEL = frozenset(
    {"ExpectedStatus", "ExpectedErrorCode", "ExpectedErrorMessage", "Goal", "Rule", "Standard"}
)


class TestNotFound(LookupError):
    """No folder of the kit holds the named test (the kit withholds a few listed tests)."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True, slots=True)
class UseId:
    """``<UseId>``: replace ``symbol`` by the value an earlier step recorded for ``id``."""

    id: str
    symbol: str
    step: str
    section: str  # AssignedUids, AssignedUuids, AssignedPatientId, AssignedSourceId ...
    testdir: str | None = None  # relative to the using section's folder; None: that folder


@dataclass(frozen=True, slots=True)
class UseXPath:
    """``<UseXPath testdir step symbol>``: ``symbol`` is the value of an XPath over an earlier step's log."""

    symbol: str
    step: str
    xpath: str
    testdir: str | None = None
    decode_base64: bool = False


@dataclass(frozen=True, slots=True)
class UseReport:
    """``<UseReport>``: replace ``use_as`` by a value an earlier step's ``<Report>`` saved."""

    report_name: str
    use_as: str
    section: str  # a section name of ``test``, or THIS_SECTION
    step: str
    test: str | None = None  # None: the using test


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """``<Report name section>xpath</Report>``: a value to save after the step runs."""

    name: str
    section: str  # INPUT_METADATA or RESULT
    xpath: str


@dataclass(frozen=True, slots=True)
class StepFlags:
    """The preparation switches of a step (flags may sit in the TestStep or its transaction)."""

    xdsb: bool = False
    no_convert: bool = False
    no_patient_id: bool = False
    alt_patient_id: bool = False
    new_patient_id: bool = False  # <NewPatientId/> / <CreateNewPatientId/>
    assign_uuids: bool = False
    assign_uuids_exclude: tuple[str, ...] = ()  # <AssignUuids><Exclude value/></AssignUuids>
    no_assign_uids: frozenset[str] = frozenset()  # <NoAssignUids id="X"/>
    no_assign_any_uids: bool = False  # <NoAssignUids/> without id: keep every uniqueId
    no_metadata: bool = False

    def assigns_uid_to(self, object_id: str) -> bool:
        """Whether the object's uniqueId is replaced by a fresh one."""
        return not self.no_assign_any_uids and object_id not in self.no_assign_uids


@dataclass(frozen=True, slots=True)
class TestStep:
    """One ``<TestStep>``: what to send, how to prepare it, what to expect."""

    __test__ = False  # not a pytest test class

    id: str
    section: str
    directory: Path  # the section folder; files are relative to it
    transaction: str | None  # element name, e.g. "RegisterTransaction"; None when absent
    expected_status: tuple[str, ...] = ()  # empty: the plan says nothing
    expected_error_codes: tuple[str, ...] = ()
    expected_error_messages: tuple[str, ...] = ()
    goals: tuple[str, ...] = ()
    metadata_file: Path | None = None
    metadata: etree._Element | None = None  # inline <Metadata> content, when given instead of a file
    documents: dict[str, Path] = field(default_factory=dict)
    flags: StepFlags = StepFlags()
    use_id: tuple[UseId, ...] = ()
    use_report: tuple[UseReport, ...] = ()
    use_xpath: tuple[UseXPath, ...] = ()
    reports: tuple[ReportSpec, ...] = ()
    expected_contents: etree._Element | None = None
    assertions: etree._Element | None = None
    element: etree._Element | None = field(default=None, repr=False, compare=False)
    transaction_element: etree._Element | None = field(default=None, repr=False, compare=False)

    @property
    def known_transaction(self) -> bool:
        return self.transaction in KNOWN_TRANSACTIONS


@dataclass(frozen=True, slots=True)
class Section:
    """One ``testplan.xml``: a named group of steps run in order."""

    name: str
    directory: Path
    test_name: str  # the plan's own <Test> text, e.g. "11990/submit"
    steps: tuple[TestStep, ...]
    rules: tuple[str, ...] = ()
    element: etree._Element | None = field(default=None, repr=False, compare=False)

    def step(self, step_id: str) -> TestStep:
        for candidate in self.steps:
            if candidate.id == step_id:
                return candidate
        raise KeyError(f"section {self.name!r} has no step {step_id!r}")


@dataclass(frozen=True, slots=True)
class Test:
    """A test folder: title, tags and its sections in run order."""

    __test__ = False  # not a pytest test class

    id: str
    directory: Path
    title: str
    sections: tuple[Section, ...]
    missing_sections: tuple[str, ...] = ()  # listed in index.idx but without a testplan.xml
    collections: tuple[str, ...] = ()

    def section(self, name: str) -> Section:
        for candidate in self.sections:
            if candidate.name == name:
                return candidate
        raise KeyError(f"test {self.id!r} has no section {name!r}")


# --- loading -----------------------------------------------------------------------------------------
def find_test_dir(testkit_dir: Path, test_id: str) -> Path:
    """The folder of ``test_id``: a path relative to the kit, or a name in one of TEST_FOLDERS."""
    direct = testkit_dir / test_id
    if "/" in test_id and direct.is_dir():
        return direct
    for folder in TEST_FOLDERS:
        candidate = testkit_dir / folder / test_id
        if candidate.is_dir():
            return candidate
    raise TestNotFound(f"test {test_id!r} is not in the kit at {testkit_dir}")


def list_tests(testkit_dir: Path, folder: str = "tests") -> list[str]:
    """The test ids in one folder of the kit, in natural order (11990 before 12000, 2 before 10)."""
    root = testkit_dir / folder
    return sorted((p.name for p in root.iterdir() if p.is_dir()), key=_natural_key)


def load_test(testkit_dir: Path, test_id: str) -> Test:
    """Read a whole test: its sections (index.idx order) and every step in them."""
    directory = find_test_dir(testkit_dir, test_id)
    sections: list[Section] = []
    missing: list[str] = []
    for name in section_names(directory):
        section_dir = directory / name if name else directory
        if (section_dir / "testplan.xml").is_file():
            sections.append(load_section(section_dir, name))
        else:
            missing.append(name)
    return Test(
        id=test_id,
        directory=directory,
        title=_first_line(directory / "readme.txt"),
        sections=tuple(sections),
        missing_sections=tuple(missing),
        collections=tuple(_list_file(directory / "collections.txt")),
    )


def section_names(test_dir: Path) -> list[str]:
    """Section names in run order: index.idx, else sub-folders with a plan, else ``""`` (the folder).

    An empty index.idx (12329, es_*) counts as none. Readme-only tests (manual ones) have no sections.
    """
    listed = _list_file(test_dir / "index.idx")
    if listed:
        return listed
    names = sorted(
        (p.name for p in test_dir.iterdir() if (p / "testplan.xml").is_file()),
        key=_natural_key,
    )
    if not names and (test_dir / "testplan.xml").is_file():
        return [""]
    return names


def load_section(section_dir: Path, name: str | None = None) -> Section:
    """Parse ``section_dir/testplan.xml``; ``name`` defaults to the folder's name."""
    name = section_dir.name if name is None else name
    plan = safexml.parse((section_dir / "testplan.xml").read_bytes())
    steps = tuple(
        _parse_step(child, name, section_dir) for child in _elements(plan) if child.tag in _STEP_TAGS
    )
    return Section(
        name=name,
        directory=section_dir,
        test_name=_text(plan.find("Test")),
        steps=steps,
        rules=tuple(_text(rule) for rule in plan.findall("Rule") if _text(rule)),
        element=plan,
    )


def load_collection(testkit_dir: Path, name: str) -> list[str]:
    """Test ids of a collection: ``static.collections/<name>.tc`` first, then tests tagged ``name``.

    A test is tagged by a line of its ``collections.txt`` (``#`` lines are commented out).
    Static lists may name tests the kit withholds; the caller reports those as missing.
    """
    ids: list[str] = []
    static = testkit_dir / "static.collections" / f"{name}.tc"
    if static.is_file():
        ids.extend(_list_file(static))
    tests_dir = testkit_dir / "tests"
    if tests_dir.is_dir():
        for test_id in list_tests(testkit_dir):
            if name in _list_file(tests_dir / test_id / "collections.txt"):
                ids.append(test_id)
    return list(dict.fromkeys(ids))


def resolve_testdir(section_dir: Path, testdir: str | None, test_dir: Path | None = None) -> Path:
    """The folder a ``testdir`` attribute (``UseId``, ``ReferenceMetadata``, ``UseXPath``) names.

    As the toolkit reads it: relative to the using section's folder (``../submit``, ``../../12346``);
    a name that is no folder there is a sibling section of the same test (12021 retrieve's
    ``testdir="submit"``).
    """
    if not testdir:
        return section_dir
    beside = Path(os.path.normpath(section_dir / testdir))
    if beside.is_dir() or test_dir is None:
        return beside
    in_test = Path(os.path.normpath(test_dir / testdir))
    return in_test if in_test.is_dir() else beside


def resolve_file(section_dir: Path, name: str, test_dir: Path | None = None) -> Path:
    """A kit file a plan names (``ReferenceDocument``): in the section's folder, else the test's."""
    beside = Path(os.path.normpath(section_dir / name))
    if beside.is_file() or test_dir is None:
        return beside
    in_test = Path(os.path.normpath(test_dir / name))
    return in_test if in_test.is_file() else beside


# --- step parsing ------------------------------------------------------------------------------------
def _parse_step(element: etree._Element, section: str, directory: Path) -> TestStep:
    transaction_element = next(
        (child for child in _elements(element) if child.tag not in _STEP_LEVEL and _is_transaction(child)),
        None,
    )
    holders = [element] + ([transaction_element] if transaction_element is not None else [])

    def children(tag: str) -> list[etree._Element]:
        return [child for holder in holders for child in holder.findall(tag)]

    statuses = tuple(
        part.strip() for e in children("ExpectedStatus") for part in _text(e).split(",") if part.strip()
    )
    metadata_files = children("MetadataFile")
    inline = children("Metadata")
    return TestStep(
        id=element.get("id", ""),
        section=section,
        directory=directory,
        transaction=transaction_element.tag if transaction_element is not None else None,
        expected_status=statuses,
        expected_error_codes=tuple(_text(e) for e in children("ExpectedErrorCode") if _text(e)),
        expected_error_messages=tuple(_text(e) for e in children("ExpectedErrorMessage") if _text(e)),
        goals=tuple(_text(e) for e in children("Goal") if _text(e)),
        metadata_file=directory / _text(metadata_files[0]) if metadata_files else None,
        metadata=next(iter(_elements(inline[0])), None) if inline else None,
        documents={e.get("id", ""): directory / _text(e) for e in children("Document")},
        flags=_parse_flags(children),
        use_id=tuple(
            UseId(
                id=e.get("id", ""),
                symbol=e.get("symbol", ""),
                step=e.get("step", ""),
                section=e.get("section", ""),
                testdir=e.get("testdir"),
            )
            for e in children("UseId")
        ),
        use_report=tuple(
            UseReport(
                report_name=e.get("reportName", ""),
                use_as=e.get("useAs", ""),
                section=e.get("section", ""),
                step=e.get("step", ""),
                test=e.get("test"),
            )
            for e in children("UseReport")
        ),
        use_xpath=tuple(
            UseXPath(
                symbol=e.get("symbol", ""),
                step=e.get("step", ""),
                xpath=_text(e),
                testdir=e.get("testdir"),
                decode_base64=e.get("decodebase64", "").lower() == "true",
            )
            for e in children("UseXPath")
        ),
        reports=tuple(
            ReportSpec(name=e.get("name", ""), section=e.get("section", ""), xpath=_text(e))
            for e in children("Report")
        ),
        expected_contents=next(iter(children("ExpectedContents")), None),
        assertions=next(iter(children("Assertions")), None),
        element=element,
        transaction_element=transaction_element,
    )


def _parse_flags(children: Callable[[str], list[etree._Element]]) -> StepFlags:
    """The flags among ``children(tag)``: the step's and its transaction's child elements."""
    no_assign = children("NoAssignUids")
    assign_uuids = children("AssignUuids")
    return StepFlags(
        xdsb=bool(children("XDSb")),
        no_convert=bool(children("NoConvert")),
        no_patient_id=bool(children("NoPatientId")),
        alt_patient_id=bool(children("AltPatientId")),
        new_patient_id=bool(children("NewPatientId") or children("CreateNewPatientId")),
        assign_uuids=bool(assign_uuids),
        assign_uuids_exclude=tuple(
            x.get("value", "") for e in assign_uuids for x in e.findall("Exclude") if x.get("value")
        ),
        no_assign_uids=frozenset(e.get("id") for e in no_assign if e.get("id")),
        no_assign_any_uids=any(not e.get("id") for e in no_assign),
        no_metadata=bool(children("NoMetadata")),
    )


def _is_transaction(element: etree._Element) -> bool:
    return element.tag.endswith("Transaction")


# --- small helpers -----------------------------------------------------------------------------------
def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _text(element: etree._Element | None) -> str:
    return "" if element is None else "".join(element.itertext()).strip()


def _list_file(path: Path) -> list[str]:
    """Non-blank, non-comment lines of a list file (index.idx, collections.txt, *.tc)."""
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _first_line(path: Path) -> str:
    lines = _list_file(path)
    return lines[0] if lines else ""


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]
