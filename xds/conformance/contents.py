"""Stored-query steps of the NIST test kit: the request as the toolkit sends it, the answer as it judges it.

A ``StoredQueryTransaction`` step names an ``AdhocQueryRequest`` file whose ``$symbol$``s are filled in
from earlier steps (``<UseId>``, ``<UseReport>``); with ``<CleanParams/>`` the toolkit drops every
parameter slot still holding an unresolved symbol. The answer is judged by ``<ExpectedContents>``,
whose vocabulary is the toolkit's query-metadata validator's: counts (``<Documents count="2"/>``,
``<ObjectRefs count="3"/>`` ...), statuses (``<DocApp/>``, ``<OneDocDep/>`` ...) and submission-set
shapes (``<SSwithOneDoc/>``, ``<SSwithTwoDocOneFol/>`` ...), and ``<DocumentEntries>`` lists of
entries that must (only) or must not be present. Each check reports what is wrong, in words; an
expectation this module does not know is returned as unjudged, never as met.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from xds.conformance.testplan import UseId
from xds.metadata import vocabulary as v

_R = "{" + v.NS_RIM + "}"
_UNRESOLVED = re.compile(r"\$[A-Za-z0-9_]+\$")
MULTI_PATIENT_QUERIES = frozenset(
    {v.SQ_FIND_DOCUMENTS_MPQ, v.SQ_FIND_FOLDERS_MPQ, v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ}
)


def clean_params(request: etree._Element) -> list[str]:
    """``<CleanParams/>``: remove the query slots whose values still hold a ``$symbol$``; their names."""
    removed = []
    for slot in list(request.iter(_R + "Slot")):
        if any(_UNRESOLVED.search(value.text or "") for value in slot.iter(_R + "Value")):
            removed.append(slot.get("name", ""))
            parent = slot.getparent()
            assert parent is not None
            parent.remove(slot)
    return removed


def query_action(request: etree._Element) -> str:
    """The SOAP action for a query request: ITI-51's for the multi-patient queries, else ITI-18's."""
    adhoc = request.find(_R + "AdhocQuery")
    query_id = adhoc.get("id", "") if adhoc is not None else ""
    return v.ACTION_MULTI_PATIENT_QUERY if query_id in MULTI_PATIENT_QUERIES else v.ACTION_STORED_QUERY


@dataclass
class Answer:
    """The objects of an AdhocQueryResponse, sorted as the toolkit's validator sees them."""

    documents: list[etree._Element] = field(default_factory=list)
    submission_sets: list[etree._Element] = field(default_factory=list)
    folders: list[etree._Element] = field(default_factory=list)
    associations: list[etree._Element] = field(default_factory=list)
    object_refs: list[etree._Element] = field(default_factory=list)

    @classmethod
    def of(cls, response: etree._Element | None) -> Answer:
        answer = cls()
        object_list = response.find(_R + "RegistryObjectList") if response is not None else None
        if object_list is None:
            return answer
        nodes: dict[str, str] = {}  # package id -> classification node (nested or standing beside it)
        for c in object_list.iter(_R + "Classification"):
            if c.get("classificationNode") in (v.SUBMISSION_SET_NODE, v.FOLDER_NODE):
                parent = c.getparent()
                owner = c.get("classifiedObject") or (parent.get("id", "") if parent is not None else "")
                nodes[owner] = c.get("classificationNode", "")
        for child in object_list:
            tag = child.tag
            if tag == _R + "ExtrinsicObject":
                answer.documents.append(child)
            elif tag == _R + "RegistryPackage":
                node = nodes.get(child.get("id", ""))
                if node == v.SUBMISSION_SET_NODE:
                    answer.submission_sets.append(child)
                elif node == v.FOLDER_NODE:
                    answer.folders.append(child)
            elif tag == _R + "Association":
                answer.associations.append(child)
            elif tag == _R + "ObjectRef":
                answer.object_refs.append(child)
        return answer

    def link(
        self, source: etree._Element, target: etree._Element, kind: str = v.HAS_MEMBER
    ) -> etree._Element | None:
        for a in self.associations:
            if (
                a.get("sourceObject") == source.get("id")
                and a.get("targetObject") == target.get("id")
                and a.get("associationType") == kind
            ):
                return a
        return None


class _Checker:
    """The toolkit's checks, each adding a sentence to ``problems`` when it fails."""

    def __init__(self, answer: Answer) -> None:
        self.a = answer
        self.problems: list[str] = []

    def fail(self, text: str) -> None:
        self.problems.append(text)

    def count(self, what: str, found: list[etree._Element], expected: int) -> bool:
        if len(found) != expected:
            self.fail(f"found {len(found)} {what} instead of {expected}")
            return False
        return True

    def has_ss(self) -> bool:
        if not self.a.submission_sets:
            self.fail("no SubmissionSet found")
            return False
        return True

    def no_ss(self) -> None:
        if self.a.submission_sets:
            self.fail("a SubmissionSet was found")

    def statuses(
        self, objects: list[etree._Element], what: str, status: str, *, exactly_one: bool = False
    ) -> None:
        word = status.rsplit(":", 1)[-1]
        matching = [o for o in objects if o.get("status") == status]
        if exactly_one:
            if len(matching) != 1:
                self.fail(f"found {len(matching)} {word} {what} instead of one")
        elif len(matching) != len(objects):
            self.fail(f"not every {what} is {word}")

    def link(
        self, source: etree._Element, target: etree._Element, kind: str = v.HAS_MEMBER
    ) -> etree._Element | None:
        found = self.a.link(source, target, kind)
        if found is None:
            self.fail(
                f"no {kind.rsplit(':', 1)[-1]} association from {source.get('id')} to {target.get('id')}"
            )
        return found

    def link_to_one_of(self, source: etree._Element, targets: list[etree._Element]) -> None:
        for target in targets:
            if self.a.link(source, target) is not None:
                return
        self.fail(
            f"no HasMember association from {source.get('id')} to any of {[t.get('id') for t in targets]}"
        )

    # --- shapes -------------------------------------------------------------------------------------
    def ss_with_docs(self, docs: int, folders: int, associations: int) -> None:
        ok = self.has_ss() & self.count("DocumentEntries", self.a.documents, docs)
        ok &= self.count("Folders", self.a.folders, folders)
        if not ok:
            return
        self.count("Associations", self.a.associations, associations)
        ss = self.a.submission_sets[0]
        for doc in self.a.documents:
            self.link(ss, doc)
        for folder in self.a.folders:
            self.link(ss, folder)

    def folder_memberships(self, *, every_doc: bool) -> None:
        ss, folder = self.a.submission_sets[0], self.a.folders[0]
        if every_doc:
            memberships = [m for d in self.a.documents if (m := self.link(folder, d)) is not None]
        else:
            memberships = [m for d in self.a.documents if (m := self.a.link(folder, d)) is not None][:1]
            if not memberships:
                self.fail(f"folder {folder.get('id')} holds none of the DocumentEntries")
        for membership in memberships:
            self.link(ss, membership)


Resolver = Callable[[UseId], str]


# <ExpectedContents> elements, each judged by one rule of the NIST toolkit's QueryExpectedContents
_COUNTED = {  # element: (what the answer holds, Answer attribute)
    "Documents": ("DocumentEntries", "documents"),
    "SubmissionSets": ("SubmissionSets", "submission_sets"),
    "Folders": ("Folders", "folders"),
    "Associations": ("Associations", "associations"),
}
_STATUSES = {  # element: (Answer attribute, object kind, status, exactly one)
    # DocApp: every DocumentEntry returned is Approved; an answer holding none has none to fail it
    "DocApp": ("documents", "DocumentEntry", v.STATUS_APPROVED, False),
    "DocDep": ("documents", "DocumentEntry", v.STATUS_DEPRECATED, False),
    "OneDocApp": ("documents", "DocumentEntry", v.STATUS_APPROVED, True),
    "OneDocDep": ("documents", "DocumentEntry", v.STATUS_DEPRECATED, True),
    "FolApp": ("folders", "Folder", v.STATUS_APPROVED, False),
    "FolDep": ("folders", "Folder", v.STATUS_DEPRECATED, False),
}
_SHAPES = {  # element: (documents, folders, associations, SubmissionSet Approved, folder holds every doc)
    "SSwithOneDoc": (1, 0, 1, True, None),
    "SSwithOneDocOnly": (1, 0, 1, False, None),
    "SSwithTwoDoc": (2, 0, 2, True, None),
    "SSwithOneFol": (0, 1, 1, False, None),
    "SSwithOneDocOneFol": (1, 1, 4, False, True),
    "SSwithTwoDocOneFol": (2, 1, 7, False, True),
    "SSwithTwoDocOneFolOneDocInFol": (2, 1, 5, False, False),
}


def judge_contents(
    expected: etree._Element | None, response: etree._Element | None, resolve: Resolver | None = None
) -> tuple[list[str], list[str]]:
    """Check an AdhocQueryResponse against ``<ExpectedContents>``: (problems, unjudged expectations)."""
    if expected is None:
        return [], []
    check = _Checker(Answer.of(response))
    unjudged: list[str] = []
    for item in expected:
        if not isinstance(item.tag, str):
            continue
        if item.tag == "DocumentEntries" and resolve is not None:
            unjudged += [f"DocumentEntries/{part}" for part in _document_entries(check, item, resolve)]
        elif not _judge_one(check, item.tag, int(item.get("count", "-1"))):
            unjudged.append(item.tag)
    return check.problems, unjudged


def _judge_one(check: _Checker, name: str, count: int) -> bool:
    """Judge one expectation; False when it is not one this runner knows."""
    answer = check.a
    if name in _COUNTED:
        label, field = _COUNTED[name]
        check.count(label, getattr(answer, field), count)
    elif name in _STATUSES:
        field, kind, status, exactly_one = _STATUSES[name]
        check.statuses(getattr(answer, field), kind, status, exactly_one=exactly_one)
    elif name in _SHAPES:
        docs, folders, associations, approved, every_doc = _SHAPES[name]
        before = len(check.problems)
        check.ss_with_docs(docs, folders, associations)
        if approved and answer.submission_sets:
            check.statuses(answer.submission_sets[:1], "SubmissionSet", v.STATUS_APPROVED)
        if every_doc is not None and len(check.problems) == before:
            check.folder_memberships(every_doc=every_doc)
    elif name in _OTHERS:
        _OTHERS[name](check)
    elif name == "ObjectRefs":
        check.count("ObjectRefs", answer.object_refs, count)
        leaf = answer.documents + answer.submission_sets + answer.folders + answer.associations
        if leaf:
            check.fail(f"{len(leaf)} full objects returned where only ObjectRefs were expected")
    else:
        return False
    return True


def _nothing(check: _Checker) -> None:
    check.no_ss()
    check.count("DocumentEntries", check.a.documents, 0)
    check.count("Folders", check.a.folders, 0)
    check.count("Associations", check.a.associations, 0)


def _ss_approved(check: _Checker) -> None:
    if check.has_ss():
        check.statuses(check.a.submission_sets[:1], "SubmissionSet", v.STATUS_APPROVED)


def _has(kind: str) -> Callable[[_Checker], None]:
    def judge(check: _Checker) -> None:
        if not any(a.get("associationType") == kind for a in check.a.associations):
            check.fail(f"no {kind.rsplit(':', 1)[-1]} association in the answer")

    return judge


def _snapshot_pattern(check: _Checker) -> None:
    snapshots = [a for a in check.a.associations if a.get("associationType") == v.IS_SNAPSHOT_OF]
    if len(snapshots) != 1:
        check.fail(f"found {len(snapshots)} IsSnapshotOf associations instead of one")
        return
    by_id = {d.get("id"): d for d in check.a.documents}
    source, target = by_id.get(snapshots[0].get("sourceObject")), by_id.get(snapshots[0].get("targetObject"))
    if source is None or target is None:
        check.fail("the snapshot or the On-Demand DocumentEntry is not in the answer")
        return
    check.statuses([source, target], "DocumentEntry", v.STATUS_APPROVED)
    if target.get("objectType") != v.DOC_ENTRY_ON_DEMAND:
        check.fail("the IsSnapshotOf target is not an On-Demand DocumentEntry")
    if source.get("objectType") != v.DOC_ENTRY_STABLE:
        check.fail("the snapshot is not a stable DocumentEntry")


def _document_entries(check: _Checker, item: etree._Element, resolve: Resolver) -> list[str]:
    """``<DocumentEntries>``: ``MustOnlyInclude`` / ``Include`` / ``Exclude`` lists, ``DocumentEntryType``.

    The names of parts it does not know are returned (unjudged).
    """
    by_id = {d.get("id"): d for d in check.a.documents}
    unknown: list[str] = []
    for part in item:
        if not isinstance(part.tag, str):
            continue
        if part.tag == "DocumentEntryType":
            wanted = (part.text or "").strip()
            for doc in check.a.documents:
                if doc.get("objectType") != wanted:
                    check.fail(
                        f"DocumentEntry {doc.get('id')} has objectType {doc.get('objectType')}, not {wanted}"
                    )
            continue
        if part.tag not in ("MustOnlyInclude", "Include", "Exclude"):
            unknown.append(part.tag)
            continue
        matched = 0
        for entry in part.iter("DocumentEntry"):
            found = None
            for use in entry.iter("UseId"):
                use_id = UseId(
                    id=use.get("id", ""),
                    symbol=use.get("symbol", ""),
                    step=use.get("step", ""),
                    section=use.get("section", ""),
                    testdir=use.get("testdir"),
                )
                wanted_id = resolve(use_id)
                found = by_id.get(wanted_id)
                if part.tag == "Exclude" and found is not None:
                    check.fail(f"DocumentEntry {wanted_id} is in the answer and should not be")
                elif part.tag != "Exclude" and found is None:
                    check.fail(f"DocumentEntry {wanted_id} is not in the answer")
                elif found is not None:
                    matched += 1
            kind = entry.findtext("DocumentEntryType")
            if kind and found is not None and found.get("objectType") != kind.strip():
                check.fail(
                    f"DocumentEntry {found.get('id')} has objectType {found.get('objectType')}, not {kind}"
                )
        if part.tag == "MustOnlyInclude" and matched != len(check.a.documents):
            check.fail(f"{len(check.a.documents)} DocumentEntries in the answer, {matched} expected")
    return unknown


LogEntry = tuple[str, str, etree._Element | None, etree._Element | None]  # step, transaction, answer, request


def step_log(steps: list[LogEntry]) -> etree._ElementTree:
    """The toolkit's log of a section: ``TestResults/TestStep[@id]/<transaction>`` holding the
    request sent (``InputMetadata``) and the answer (``Result``)."""
    log = etree.ElementTree(etree.Element("TestResults"))
    for step_id, transaction, response, request in steps:
        step = etree.SubElement(log.getroot(), "TestStep", id=step_id)
        # the toolkit's log names the step on the transaction too (kit XPaths: //XCQTransaction[@step="x"])
        holder = etree.SubElement(step, transaction or "NullTransaction", step=step_id)
        if request is not None:
            etree.SubElement(holder, "InputMetadata").append(copy.deepcopy(request))
        result = etree.SubElement(holder, "Result")
        if response is not None:
            result.append(copy.deepcopy(response))
    return log


def judge_assertions(
    assertions: etree._Element | None,
    step_id: str,
    transaction: str,
    response: etree._Element | None,
    symbols: dict[str, str],
    *,
    log: etree._ElementTree | None = None,
) -> list[str]:
    """``<Assertions><Assert>xpath</Assert></Assertions>``: each XPath must be true (problems).

    The toolkit evaluates them over its log of the section (``TestStep/<transaction>/Result/<answer>``);
    ``log`` is that log when the caller has it, else one is built around this step's answer.
    ``$symbol$``s are filled in (``$DATE$``: today, UTC).
    """
    if assertions is None:
        return []
    if log is None:
        log = step_log([(step_id, transaction, response, None)])
    values = {"$DATE$": datetime.now(UTC).strftime("%Y%m%d"), **symbols}
    problems = []
    for index, assertion in enumerate(assertions.iter("Assert")):
        xpath = " ".join((assertion.text or "").split())
        for key in sorted(values, key=len, reverse=True):
            xpath = xpath.replace(key, values[key])
        name = assertion.get("id") or f"#{index + 1}"
        try:
            outcome = log.xpath(xpath)
        except etree.XPathError as exc:
            problems.append(f"assertion {name} is not an XPath this runner can evaluate: {exc}")
            continue
        if not outcome:  # a boolean, a number, a string or a node set, each false when empty/zero
            problems.append(f"assertion {name} does not hold")
    return problems


__all__ = [
    "Answer",
    "clean_params",
    "judge_assertions",
    "judge_contents",
    "query_action",
    "step_log",
    "MULTI_PATIENT_QUERIES",
]


_OTHERS: dict[str, Callable[[_Checker], None]] = {
    "None": _nothing,
    "NoSubmissionSet": lambda check: check.no_ss(),
    "NoDocument": lambda check: check.count("DocumentEntries", check.a.documents, 0),
    "SSApproved": _ss_approved,
    "HasRPLC": _has(v.RPLC),
    "HasXFRM_RPLC": _has(v.XFRM_RPLC),
    "HasSnapshotPattern": _snapshot_pattern,
}
