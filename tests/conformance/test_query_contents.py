"""Judging stored-query steps: ExpectedContents, XPath Assertions, CleanParams and the query action.

Answers are built by hand, right and wrong, so each check is seen both to pass and to fail.
"""

from __future__ import annotations

import pytest
from lxml import etree

from xds.conformance.contents import (
    clean_params,
    judge_assertions,
    judge_contents,
    query_action,
)
from xds.conformance.testplan import UseId
from xds.metadata import vocabulary as v

R = v.NS_RIM


def package(pid: str, node: str, status: str = v.STATUS_APPROVED) -> str:
    return (
        f'<rim:RegistryPackage id="{pid}" status="{status}">'
        f'<rim:Classification id="c-{pid}" classifiedObject="{pid}" classificationNode="{node}"/>'
        "</rim:RegistryPackage>"
    )


def doc(did: str, status: str = v.STATUS_APPROVED, kind: str = v.DOC_ENTRY_STABLE) -> str:
    return f'<rim:ExtrinsicObject id="{did}" status="{status}" objectType="{kind}" mimeType="text/plain"/>'


def link(aid: str, source: str, target: str, kind: str = v.HAS_MEMBER) -> str:
    return f'<rim:Association id="{aid}" associationType="{kind}" sourceObject="{source}" targetObject="{target}"/>'


def response(*objects: str) -> etree._Element:
    return etree.fromstring(
        f'<query:AdhocQueryResponse xmlns:query="{v.NS_QUERY}" xmlns:rim="{R}" status="{v.RESPONSE_SUCCESS}">'
        f"<rim:RegistryObjectList>{''.join(objects)}</rim:RegistryObjectList></query:AdhocQueryResponse>"
    )


def expected(xml: str) -> etree._Element:
    return etree.fromstring(f"<ExpectedContents>{xml}</ExpectedContents>")


SS = package("ss", v.SUBMISSION_SET_NODE)
FOL = package("fol", v.FOLDER_NODE)
SS_ONE_DOC = (SS, doc("d1"), link("a1", "ss", "d1"))
SS_DOC_FOL = (
    SS,
    FOL,
    doc("d1"),
    link("a1", "ss", "d1"),
    link("a2", "ss", "fol"),
    link("a3", "fol", "d1"),
    link("a4", "ss", "a3"),
)


@pytest.mark.parametrize(
    ("want", "objects", "ok"),
    [
        ('<Documents count="1"/>', SS_ONE_DOC, True),
        ('<Documents count="2"/>', SS_ONE_DOC, False),
        ('<SubmissionSets count="1"/><Associations count="1"/><Folders count="0"/>', SS_ONE_DOC, True),
        ('<Folders count="1"/>', SS_ONE_DOC, False),
        ('<ObjectRefs count="2"/>', ('<rim:ObjectRef id="x"/>', '<rim:ObjectRef id="y"/>'), True),
        ('<ObjectRefs count="1"/>', (*SS_ONE_DOC, '<rim:ObjectRef id="x"/>'), False),
        ("<None/>", (), True),
        ("<None/>", (doc("d1"),), False),
        ("<NoSubmissionSet/><NoDocument/>", (FOL,), True),
        ("<NoSubmissionSet/>", SS_ONE_DOC, False),
        ("<SSwithOneDoc/>", SS_ONE_DOC, True),
        ("<SSwithOneDoc/>", (SS, doc("d1"), link("a1", "ss", "other")), False),
        (
            "<SSwithOneDoc/>",
            (package("ss", v.SUBMISSION_SET_NODE, v.STATUS_DEPRECATED), *SS_ONE_DOC[1:]),
            False,
        ),
        ("<SSwithTwoDoc/>", (SS, doc("d1"), doc("d2"), link("a1", "ss", "d1"), link("a2", "ss", "d2")), True),
        ("<SSwithOneFol/>", (SS, FOL, link("a2", "ss", "fol")), True),
        ("<SSwithOneDocOneFol/>", SS_DOC_FOL, True),
        ("<SSwithOneDocOneFol/>", SS_DOC_FOL[:-1], False),  # the SS does not hold the membership
        ("<SSwithOneDocOneFol/>", (*SS_DOC_FOL[:5], link("a3", "fol", "x"), link("a4", "ss", "a3")), False),
        ("<DocApp/><SSApproved/>", SS_ONE_DOC, True),
        ("<DocApp/>", (doc("d1"), doc("d2", v.STATUS_DEPRECATED)), False),
        ('<Documents count="0"/><DocApp/>', (), True),  # NIST 20001 query_level_1, 30007 eval_rplc_contents
        ('<Documents count="0"/><DocApp/>', (doc("d1", v.STATUS_DEPRECATED),), False),
        ("<DocDep/>", (doc("d2", v.STATUS_DEPRECATED),), True),
        ("<OneDocDep/><OneDocApp/>", (doc("d1"), doc("d2", v.STATUS_DEPRECATED)), True),
        ("<OneDocApp/>", (doc("d1"), doc("d2")), False),
        ("<FolApp/>", (FOL,), True),
        ("<FolApp/>", (package("fol", v.FOLDER_NODE, v.STATUS_DEPRECATED),), False),
        ("<HasXFRM_RPLC/>", (link("x", "d2", "d1", v.XFRM_RPLC),), True),
        ("<HasXFRM_RPLC/>", (link("x", "d2", "d1", v.RPLC),), False),
    ],
)
def test_expected_contents(want: str, objects: tuple[str, ...], ok: bool) -> None:
    problems, unjudged = judge_contents(expected(want), response(*objects))
    assert unjudged == []
    assert (problems == []) is ok, problems


def test_unknown_expectation_is_unjudged_not_met() -> None:
    problems, unjudged = judge_contents(expected("<SomethingNew/>"), response())
    assert problems == [] and unjudged == ["SomethingNew"]


def test_document_entries_lists() -> None:
    answer = response(doc("urn:uuid:1"), doc("urn:uuid:2", kind=v.DOC_ENTRY_ON_DEMAND))
    ids = {"D1": "urn:uuid:1", "D2": "urn:uuid:2", "D3": "urn:uuid:3"}

    def resolve(use: UseId) -> str:
        return ids[use.id]

    def entries(part: str, *keys: str, kind: str = "") -> etree._Element:
        inner = "".join(
            f'<DocumentEntry><UseId id="{k}" symbol="$x$" step="s" section="AssignedUuids"/>'
            + (f"<DocumentEntryType>{kind}</DocumentEntryType>" if kind else "")
            + "</DocumentEntry>"
            for k in keys
        )
        return expected(f"<DocumentEntries><{part}>{inner}</{part}></DocumentEntries>")

    assert judge_contents(entries("MustOnlyInclude", "D1", "D2"), answer, resolve)[0] == []
    assert judge_contents(entries("MustOnlyInclude", "D1"), answer, resolve)[0]
    assert judge_contents(entries("Include", "D2", kind=v.DOC_ENTRY_ON_DEMAND), answer, resolve)[0] == []
    assert judge_contents(entries("Include", "D1", kind=v.DOC_ENTRY_ON_DEMAND), answer, resolve)[0]
    assert judge_contents(entries("Include", "D3"), answer, resolve)[0]
    assert judge_contents(entries("Exclude", "D3"), answer, resolve)[0] == []
    assert judge_contents(entries("Exclude", "D1"), answer, resolve)[0]


def test_assertions_over_the_step_log() -> None:
    answer = response(doc("d1"), doc("d2"))
    holds = etree.fromstring(
        "<Assertions><Assert id='two'>count(//TestStep[@id='q']/StoredQueryTransaction/Result"
        "//*[local-name()='ExtrinsicObject']) = $N$</Assert></Assertions>"
    )
    assert judge_assertions(holds, "q", "StoredQueryTransaction", answer, {"$N$": "2"}) == []
    assert judge_assertions(holds, "q", "StoredQueryTransaction", answer, {"$N$": "3"}) == [
        "assertion two does not hold"
    ]
    broken = etree.fromstring("<Assertions><Assert>count(//x</Assert></Assertions>")
    assert judge_assertions(broken, "q", "StoredQueryTransaction", answer, {})


def test_clean_params_and_action() -> None:
    request = etree.fromstring(
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{R}">'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS_MPQ}">'
        "<rim:Slot name='$a'><rim:ValueList><rim:Value>'$uid$'</rim:Value></rim:ValueList></rim:Slot>"
        "<rim:Slot name='$b'><rim:ValueList><rim:Value>'1.2.3'</rim:Value></rim:ValueList></rim:Slot>"
        "</rim:AdhocQuery></query:AdhocQueryRequest>"
    )
    assert query_action(request) == v.ACTION_MULTI_PATIENT_QUERY
    assert clean_params(request) == ["$a"]
    assert [s.get("name") for s in request.iter(f"{{{R}}}Slot")] == ["$b"]
    request[0].set("id", v.SQ_GET_DOCUMENTS)
    assert query_action(request) == v.ACTION_STORED_QUERY
