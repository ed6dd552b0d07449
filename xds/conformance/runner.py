"""Replaying NIST test-kit tests against a running deployment, and judging the answers.

A :class:`Session` holds what one replay has learned (patient ids fed, uniqueIds and UUIDs
assigned, values saved by ``<Report>``), runs a test's sections in order, sends each step's
transaction over real HTTP (the patient identity feed over MLLP) and judges ExpectedStatus,
ExpectedErrorCode and ExpectedErrorMessage, and for stored queries ExpectedContents
(``xds.conformance.contents``). Transactions the runner cannot send yet, and expectations it
cannot judge, are reported as not applicable, by name — never as passed.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from lxml import etree

from xds.conformance import testplan as tp
from xds.conformance.contents import clean_params, judge_assertions, judge_contents, query_action
from xds.conformance.substitution import (
    PATIENT_ID_SCHEMES,
    Prepared,
    evaluate_reports,
    load_metadata,
    prepare_submission,
)
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response

Outcome = Literal["passed", "failed", "not applicable"]

# NIST's test assigning authority; patients fed during a replay are made up under it.
DEFAULT_AUTHORITY = "1.3.6.1.4.1.21367.2005.3.7"
DEFAULT_SOURCE_ID = "1.3.6.1.4.1.21367.4.1"


@dataclass
class StepResult:
    test: str
    section: str
    step: str
    transaction: str | None
    outcome: Outcome
    reason: str = ""


@dataclass
class Target:
    """Where the deployment under test listens."""

    registry_url: str | None = None
    feed: tuple[str, int] | None = None  # MLLP host, port of the ITI-8 feed
    repository_url: str | None = None  # ITI-41 / ITI-43 endpoint of the repository under test


@dataclass
class Answer:
    status: str  # Success | Failure | PartialSuccess | Fault
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # code, context, severity
    element: etree._Element | None = None


class Session:
    """One replay: shared state across the tests it runs."""

    def __init__(
        self,
        testkit: Path,
        target: Target,
        *,
        authority: str = DEFAULT_AUTHORITY,
        source_id: str = DEFAULT_SOURCE_ID,
        client: httpx.Client | None = None,
    ) -> None:
        self.testkit = testkit
        self.target = target
        self.authority = authority
        self.source_id = source_id
        self.client = client or httpx.Client(timeout=60)
        self.reports: dict[tuple[str, str, str], dict[str, str]] = {}
        self.prepared: dict[tuple[str, str, str], Prepared] = {}
        self.section_patients: dict[tuple[str, str], str] = {}
        self.last_answers: dict[tuple[str, str], etree._Element] = {}  # (test, section) -> latest answer
        self._current: tuple[str, str] = ("", "")
        # the patient a test's UseReport named, kept for its later sections
        self.test_patients: dict[str, str] = {}
        self._running: set[str] = set()
        self._oids = itertools.count(1)
        self._oid_root = f"1.2.42.{int(time.time())}.{uuid.uuid4().int % 10**6}"

    # --- ids --------------------------------------------------------------------------------------
    def fresh_oid(self) -> str:
        return f"{self._oid_root}.{next(self._oids)}"

    def fresh_patient(self) -> str:
        return f"{uuid.uuid4().hex[:16]}^^^&{self.authority}&ISO"

    # --- running ----------------------------------------------------------------------------------
    def run_test(self, test_id: str) -> list[StepResult]:
        test = tp.load_test(self.testkit, test_id)
        self._running.add(test.id)
        results: list[StepResult] = []
        try:
            for section in test.sections:
                for step in section.steps:
                    results.append(self._run_step(test, section, step))
        finally:
            self._running.discard(test.id)
        return results

    def _run_step(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> StepResult:
        def result(outcome: Outcome, reason: str = "") -> StepResult:
            return StepResult(test.id, section.name, step.id, step.transaction, outcome, reason)

        self._current = (test.id, section.name)
        try:
            if step.transaction == tp.NULL:
                return result(*self._null(test, section, step))
            if step.transaction == tp.PATIENT_IDENTITY_FEED:
                return result(*self._feed(test, section, step))
            if step.transaction == tp.REGISTER:
                return result(*self._register(test, section, step))
            if step.transaction == tp.PROVIDE_AND_REGISTER:
                return result(*self._provide(test, section, step))
            if step.transaction == tp.RETRIEVE:
                return result(*self._retrieve(test, section, step))
            if step.transaction == tp.STORED_QUERY:
                return result(*self._query(test, section, step))
            if not step.transaction and step.flags.new_patient_id:
                return result(*self._new_patient(test, section, step))
        except _Unresolved as exc:
            return result("failed", str(exc))
        return result(
            "not applicable", f"{step.transaction or 'no transaction'} is not sent by this runner yet"
        )

    # --- symbols ----------------------------------------------------------------------------------
    def _symbols(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> dict[str, str]:
        symbols: dict[str, str] = {}
        for use in step.use_report:
            source_test = use.test or test.id
            source_section = section.name if use.section == tp.THIS_SECTION else use.section
            key = (self._canonical_test(source_test), source_section, use.step)
            if key not in self.reports and source_test != test.id:
                self._run_dependency(source_test)
            saved = self.reports.get(key, {})
            if use.report_name not in saved:
                raise _Unresolved(
                    f"UseReport {use.report_name} from {source_test}/{source_section}/{use.step} has no value"
                )
            symbols[use.use_as] = saved[use.report_name]
        for use in step.use_id:
            symbols[use.symbol] = self._use_id(test, section, use)
        return symbols

    def _use_id(self, test: tp.Test, section: tp.Section, use: tp.UseId) -> str:
        """The value an earlier step (of this test, or of the test ``testdir`` names) recorded."""
        source_dir = tp.resolve_testdir(section.directory, use.testdir)
        source_test, source_section = test.id, source_dir.name
        if source_section == test.directory.name:
            source_section = section.name
        elif source_dir.parent.name in tp.TEST_FOLDERS:
            # another test that is its own single section (testdir="../../12374")
            source_test, source_section = self._canonical_test(source_dir.name), ""
            if (source_test, source_section, use.step) not in self.prepared:
                self._run_dependency(source_test)
        elif source_dir.parent != test.directory and source_dir != section.directory:
            # another test's section, e.g. testdir="../../12346/single_doc": run that test first
            source_test = self._canonical_test(source_dir.parent.name)
            if (source_test, source_section, use.step) not in self.prepared:
                self._run_dependency(source_test)
        prepared = self.prepared.get((source_test, source_section, use.step))
        if prepared is None:
            raise _Unresolved(f"UseId {use.id}: step {source_test}/{source_section}/{use.step} has not run")
        if use.section == tp.ASSIGNED_PATIENT_ID:
            patients = [
                e.get("value", "")
                for e in prepared.element.iter(f"{{{v.NS_RIM}}}ExternalIdentifier")
                if e.get("identificationScheme") in PATIENT_ID_SCHEMES
            ]
            if not patients:
                raise _Unresolved(f"UseId {use.id}: step {source_section}/{use.step} named no patient")
            return patients[0]
        table = {
            tp.ASSIGNED_UIDS: prepared.assigned_uids,
            tp.ASSIGNED_UUIDS: prepared.assigned_uuids,
        }.get(use.section, {})
        if use.id not in table:
            raise _Unresolved(
                f"UseId {use.id} ({use.section}) was not assigned in {source_section}/{use.step}"
            )
        return table[use.id]

    def _canonical_test(self, test_id: str) -> str:
        try:
            return tp.load_test(self.testkit, test_id).id
        except tp.TestNotFound:
            return test_id

    def _run_dependency(self, test_id: str) -> None:
        if test_id in self._running:
            return
        self.run_test(test_id)

    # --- transactions -----------------------------------------------------------------------------
    def _feed(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-8: make up a patient, feed it over MLLP, save it as the test's ``$patientid$``."""
        if self.target.feed is None:
            return "not applicable", "the target has no patient identity feed configured"
        pid = self.fresh_patient()
        ack = self._feed_patient(pid)
        ok = "MSA|AA" in ack
        saved = {"$patientid$": pid, "patientid": pid, "$pid$": pid}
        for spec in step.reports:
            saved.setdefault(spec.name, pid)
        self.reports[(test.id, section.name, step.id)] = saved
        expected = step.expected_status or ("Success",)
        actual = "Success" if ok else "Failure"
        if actual not in expected:
            return "failed", f"feed ACK was {ack.strip()[:200]!r}"
        return "passed", ""

    def _feed_patient(self, pid: str) -> str:
        """Send an ADT^A04 registering ``pid`` over MLLP; the ACK's text."""
        from xds.registry.mllp import send_mllp

        assert self.target.feed is not None
        ident, _, rest = pid.partition("^^^&")
        oid = rest.split("&")[0]
        stamp = time.strftime("%Y%m%d%H%M%S")
        control = uuid.uuid4().hex[:20]
        message = "\r".join(
            [
                f"MSH|^~\\&|NIST|NIST|XDS|XDS|{stamp}||ADT^A04^ADT_A01|{control}|P|2.5",
                f"EVN|A04|{stamp}",
                f"PID|||{ident}^^^&{oid}&ISO||Conformance^Patient||19700101|M",
                "PV1||O",
            ]
        )
        return send_mllp(*self.target.feed, message)

    def _new_patient(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """``<NewPatientId/>``: a second patient, fed to the target, used by the rest of the section."""
        pid = self.fresh_patient()
        if self.target.feed is not None:
            ack = self._feed_patient(pid)
            if "MSA|AA" not in ack:
                return "failed", f"feed of the new patient id was answered {ack.strip()[:200]!r}"
        self.section_patients[(test.id, section.name)] = pid
        self.reports[(test.id, section.name, step.id)] = {"$patientid$": pid}
        return "passed", ""

    def _prepare(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> Prepared:
        """A submission step's metadata with its patient, uniqueIds and UUIDs, kept for UseId."""
        symbols = self._symbols(test, section, step)
        if step.flags.new_patient_id:
            self._new_patient(test, section, step)
        patient = self._patient_for(test, section, step, symbols)
        prepared = prepare_submission(
            step, patient_id=patient, fresh_oid=self.fresh_oid, symbols=symbols, source_id=self.source_id
        )
        self.prepared[(test.id, section.name, step.id)] = prepared
        return prepared

    def _judge_submission(
        self, test: tp.Test, section: tp.Section, step: tp.TestStep, prepared: Prepared, answer: Answer
    ) -> tuple[Outcome, str]:
        saved = dict(prepared.reports)
        saved.update(evaluate_reports(step.reports, prepared.element, answer.element))
        self.reports[(test.id, section.name, step.id)] = saved
        return judge(step, answer)

    def _register(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-42: the step's SubmitObjectsRequest."""
        if self.target.registry_url is None:
            return "not applicable", "the target has no registry"
        prepared = self._prepare(test, section, step)
        answer = self._send(self.target.registry_url, v.ACTION_REGISTER, etree.tostring(prepared.element))
        return self._judge_submission(test, section, step, prepared, answer)

    def _provide(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-41: the step's submission with its documents as MTOM parts."""
        if self.target.repository_url is None:
            return "not applicable", "the target has no repository"
        from xds.soap.mtom import build_mtom_request

        prepared = self._prepare(test, section, step)
        sor = prepared.element
        if sor.tag == f"{{{v.NS_XDSB}}}ProvideAndRegisterDocumentSetRequest":  # the kit may wrap it already
            sor = sor.find(f"{{{v.NS_LCM}}}SubmitObjectsRequest")
            if sor is None:
                raise _Unresolved(
                    "the step's ProvideAndRegisterDocumentSetRequest has no SubmitObjectsRequest"
                )
        parts: list[tuple[str, str, bytes]] = []
        includes = []
        for symbolic_id, path in step.documents.items():
            doc_id = prepared.assigned_uuids.get(symbolic_id, symbolic_id)  # <AssignUuids/> renamed it
            if not path.is_file():
                raise _Unresolved(f"document file {path} of {symbolic_id} is missing from the kit")
            cid = f"{uuid.uuid4().hex}@conformance"
            parts.append((cid, "application/octet-stream", path.read_bytes()))
            includes.append(
                f'<xdsb:Document id="{doc_id}"><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cid}"/></xdsb:Document>'
            )
        body = (
            f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
            + etree.tostring(sor)
            + "".join(includes).encode()
            + b"</xdsb:ProvideAndRegisterDocumentSetRequest>"
        )
        url = self.target.repository_url
        data, content_type = build_mtom_request(v.ACTION_PROVIDE_AND_REGISTER, body, parts, to=url)
        return self._judge_submission(test, section, step, prepared, self._post(url, data, content_type))

    def _retrieve(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-43: the step's RetrieveDocumentSetRequest; every ReferenceDocument must come back."""
        if self.target.repository_url is None:
            return "not applicable", "the target has no repository"
        from xds.conformance.substitution import load_metadata
        from xds.soap.envelope import build_request

        symbols = self._symbols(test, section, step)
        request = load_metadata(step, symbols, None)
        url = self.target.repository_url
        data, content_type = build_request(v.ACTION_RETRIEVE, etree.tostring(request), to=url)
        answer = self._post(url, data, content_type)
        outcome, reason = judge(step, answer)
        if outcome != "passed" or answer.element is None or step.transaction_element is None:
            return outcome, reason
        x = "{" + v.NS_XDSB + "}"
        returned = {
            r.findtext(x + "DocumentUniqueId"): r for r in answer.element.iter(x + "DocumentResponse")
        }
        for ref in step.transaction_element.iter("ReferenceDocument"):
            uid = ref.get("uid") or ""
            uid = symbols.get(uid, uid)
            response = returned.get(uid)
            if response is None:
                return "failed", f"document {uid} was not returned"
            if response.find(x + "Document") is None or not response.findtext(x + "mimeType"):
                return "failed", f"document {uid} came back without content or mimeType"
        return "passed", ""

    def _null(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """NullTransaction: XPath assertions over the section's latest answer and reported values."""
        if step.assertions is None:
            return "passed", ""
        answer = self.last_answers.get((test.id, section.name))
        if answer is None and step.assertions.find("DataRef") is not None:
            return (
                "not applicable",
                "the answer these assertions inspect was not produced (an earlier step did not run)",
            )
        problems = judge_assertions(
            step.assertions, step.id, tp.NULL, answer, self._symbols(test, section, step)
        )
        return ("failed", "; ".join(problems)) if problems else ("passed", "")

    def _query(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-18 / ITI-51: the step's AdhocQueryRequest, judged by status, errors and ExpectedContents."""
        if self.target.registry_url is None:
            return "not applicable", "the target has no registry"
        request = load_metadata(step, self._symbols(test, section, step))
        transaction = step.transaction_element
        if transaction is not None and transaction.find("CleanParams") is not None:
            clean_params(request)
        answer = self._send(self.target.registry_url, query_action(request), etree.tostring(request))
        key = (test.id, section.name, step.id)
        self.reports[key] = evaluate_reports(step.reports, request, answer.element)
        outcome, reason = judge(step, answer)
        if outcome != "passed":
            return outcome, reason
        problems, unjudged = judge_contents(
            step.expected_contents, answer.element, lambda use: self._use_id(test, section, use)
        )
        if problems:
            return "failed", "; ".join(problems)
        problems = judge_assertions(
            step.assertions,
            step.id,
            step.transaction or "",
            answer.element,
            self._symbols(test, section, step),
        )
        if problems:
            return "failed", "; ".join(problems)
        if unjudged:
            return "not applicable", f"ExpectedContents {', '.join(unjudged)} not judged by this runner"
        return "passed", ""

    def _patient_for(
        self, test: tp.Test, section: tp.Section, step: tp.TestStep, symbols: dict[str, str]
    ) -> str:
        """The patient a submission step files under.

        ``<AltPatientId/>``: an id the target was never told about. Otherwise the section's
        ``<NewPatientId/>``, the step's ``$patientid$`` (UseReport) — which then stays the test's
        patient for its later sections, as the toolkit keeps one patient per test run (12346 names
        15818's patient in its first section only and expects all its data under it) — or the
        session's patient.
        """
        if step.flags.alt_patient_id:
            return self.fresh_patient()
        reported = symbols.get("$patientid$")
        if reported:
            self.test_patients.setdefault(test.id, reported)
        return (
            self.section_patients.get((test.id, section.name))
            or reported
            or self.test_patients.get(test.id)
            or self._session_patient(test)
        )

    def _session_patient(self, test: tp.Test) -> str:
        key = ("15817", "pif", "step")
        if key not in self.reports:
            self._run_dependency("15817")
        pid = self.reports.get(key, {}).get("$patientid$")
        if pid is None:
            raise _Unresolved("no session patient id (test 15817 did not run)")
        return pid

    def _send(self, url: str, action: str, body: bytes) -> Answer:
        from xds.soap.envelope import build_request

        data, content_type = build_request(action, body, to=url)
        return self._post(url, data, content_type)

    def _post(self, url: str, data: bytes, content_type: str) -> Answer:
        """Send a SOAP message; the RegistryResponse (alone or inside a retrieve answer) judged."""
        response = self.client.post(url, content=data, headers={"Content-Type": content_type})
        answer = self._answer(response)
        if answer.element is not None:
            self.last_answers[self._current] = answer.element
        return answer

    def _answer(self, response: httpx.Response) -> Answer:
        from xds.soap.envelope import SoapFault
        from xds.soap.mtom import parse_message

        try:
            message = parse_message(response.headers.get("content-type", ""), response.content)
        except SoapFault as fault:
            return Answer("Fault", [(fault.code, fault.reason, v.SEVERITY_ERROR)])
        body = message.body
        rr = (
            body
            if body.tag in (f"{{{v.NS_RS}}}RegistryResponse", f"{{{v.NS_QUERY}}}AdhocQueryResponse")
            else body.find(f"{{{v.NS_RS}}}RegistryResponse")
        )
        if rr is None:
            return Answer("Fault", [("", f"unexpected answer {body.tag}", v.SEVERITY_ERROR)], body)
        status, errors = parse_registry_response(rr)
        return Answer(
            status.rsplit(":", 1)[-1],
            [(e.code, e.context, e.severity) for e in errors],
            message.body,
        )


class _Unresolved(Exception):
    """A step needs a value no earlier step produced."""


def judge(step: tp.TestStep, answer: Answer) -> tuple[Outcome, str]:
    """Compare an answer with the step's expectations (ExpectedStatus, ErrorCode, ErrorMessage)."""
    expected = step.expected_status or ("Success",)
    problems: list[str] = []
    if answer.status not in expected:
        problems.append(f"expected status {'/'.join(expected)}, got {answer.status}")
    codes = [code for code, _, _ in answer.errors]
    for code in step.expected_error_codes:
        if code not in codes:
            problems.append(f"expected error code {code}, got {codes or 'none'}")
    errors_text = [
        f"{code} {context}" for code, context, severity in answer.errors if severity != v.SEVERITY_WARNING
    ]
    for message in step.expected_error_messages:
        if not any(message in text for text in errors_text):
            problems.append(f"expected an error mentioning {message!r}, got {errors_text or 'none'}")
    if problems and answer.errors and "Success" in expected:
        problems.append("errors: " + "; ".join(f"{c}: {ctx}" for c, ctx, _ in answer.errors[:5]))
    return ("failed", "; ".join(problems)) if problems else ("passed", "")


def summary(results: list[StepResult]) -> str:
    passed = sum(r.outcome == "passed" for r in results)
    failed = sum(r.outcome == "failed" for r in results)
    return f"{passed} passed, {failed} failed"


__all__ = ["Session", "Target", "StepResult", "judge", "summary"]
