"""Reports of a conformance replay: per test, per collection, as text and as JUnit XML.

A test passes only when every step of it passed on its merits. It fails when a step failed (the
reason says what was expected and what came back), is *not applicable* when the runner or the
target does not implement one of its transactions (named), and *missing* when a collection names
it but the kit does not hold it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from xds.conformance import testplan as tp
from xds.conformance.runner import Session, StepResult

TestOutcome = Literal["passed", "failed", "not applicable", "missing"]


@dataclass
class TestReport:
    __test__ = False  # not a pytest test class

    test_id: str
    outcome: TestOutcome
    steps: list[StepResult] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0


def run_test(session: Session, test_id: str) -> TestReport:
    import time

    start = time.perf_counter()
    try:
        tp.find_test_dir(session.testkit, test_id)
    except tp.TestNotFound:
        return TestReport(test_id, "missing", reason="named by the collection but not in the kit")
    steps = session.run_test(test_id)
    seconds = time.perf_counter() - start
    failed = [s for s in steps if s.outcome == "failed"]
    skipped = [s for s in steps if s.outcome == "not applicable"]
    if failed:
        reason = "; ".join(f"{s.section}/{s.step}: {s.reason}" for s in failed)
        return TestReport(test_id, "failed", steps, reason, seconds)
    if skipped or not steps:
        by_reason: dict[str, list[str]] = {}
        for s in skipped:
            by_reason.setdefault(s.reason, []).append(f"{s.section or '-'}/{s.step}")
        reasons = [f"{', '.join(where)}: {why}" for why, where in by_reason.items()]
        reason = "; ".join(reasons) if reasons else "the test has no steps"
        return TestReport(test_id, "not applicable", steps, reason, seconds)
    return TestReport(test_id, "passed", steps, "", seconds)


def run_collection(session: Session, name: str) -> list[TestReport]:
    """Every test of a collection; a name the kit has no collection of is an error."""
    ids = tp.load_collection(session.testkit, name)
    if not ids:
        raise ValueError(f"the kit has no collection {name!r}")
    return [run_test(session, test_id) for test_id in ids]


def run_named_test(session: Session, test_id: str) -> TestReport:
    """One test asked for by id; an id the kit does not hold is an error (not "missing")."""
    tp.find_test_dir(session.testkit, test_id)  # TestNotFound (a LookupError) when absent
    return run_test(session, test_id)


def counts(reports: Iterable[TestReport]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "not applicable": 0, "missing": 0}
    for r in reports:
        out[r.outcome] += 1
    return out


def summary_line(reports: Iterable[TestReport]) -> str:
    c = counts(reports)
    return f"{c['passed']} passed, {c['failed']} failed, {c['not applicable']} not applicable, {c['missing']} missing"


def text_report(collections: dict[str, list[TestReport]]) -> str:
    lines = []
    everything: list[TestReport] = []
    for name, reports in collections.items():
        lines.append(f"== {name}: {summary_line(reports)}")
        for r in reports:
            lines.append(f"  {r.test_id:<28} {r.outcome}" + (f"  — {r.reason}" if r.reason else ""))
        everything += reports
    lines.append(summary_line(everything))
    return "\n".join(lines)


def junit_xml(collections: dict[str, list[TestReport]]) -> bytes:
    """JUnit XML: one testsuite per collection, one testcase per test; not applicable and missing
    tests are skipped with their reason, failed ones carry it as the failure message."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>']
    for name, reports in collections.items():
        c = counts(reports)
        seconds = sum(r.seconds for r in reports)
        out.append(
            f'<testsuite name={quoteattr(name)} tests="{len(reports)}" failures="{c["failed"]}" '
            f'skipped="{c["not applicable"] + c["missing"]}" time="{seconds:.3f}">'
        )
        for r in reports:
            out.append(
                f'<testcase classname={quoteattr(name)} name={quoteattr(r.test_id)} time="{r.seconds:.3f}">'
            )
            if r.outcome == "failed":
                out.append(f"<failure message={quoteattr(r.reason[:500])}>{escape(r.reason)}</failure>")
            elif r.outcome in ("not applicable", "missing"):
                out.append(f"<skipped message={quoteattr(r.outcome + ': ' + r.reason)}/>")
            steps = "\n".join(
                f"{s.section}/{s.step} {s.transaction or '-'}: {s.outcome}"
                + (f" ({s.reason})" if s.reason else "")
                for s in r.steps
            )
            if steps:
                out.append(f"<system-out>{escape(steps)}</system-out>")
            out.append("</testcase>")
        out.append("</testsuite>")
    out.append("</testsuites>\n")
    return "\n".join(out).encode()
