"""Replaying NIST test-kit tests against a running deployment, and judging the answers.

A :class:`Session` holds what one replay has learned (patient ids fed, uniqueIds and UUIDs
assigned, values saved by ``<Report>``, every answer), runs a test's sections in order, sends each
step's transaction over real HTTP (the patient identity feed over MLLP) and judges it: every answer
against the official schemas (``xds.conformance.schemas``), ExpectedStatus as the whole status URN,
ExpectedErrorCode and ExpectedErrorMessage, for stored queries ExpectedContents
(``xds.conformance.contents``), for retrievals the documents themselves (``xds.conformance.retrieve``).

A step is *not applicable* — never passed — when the runner or the target cannot do what it asks
(named), when nothing in it can be judged, or when it needs what an earlier not-applicable step
would have produced (that step is named). Only a test id the kit lacks is *missing*.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from lxml import etree

from xds.conformance import retrieve as rt
from xds.conformance import testplan as tp
from xds.conformance.contents import clean_params, judge_assertions, judge_contents, query_action, step_log
from xds.conformance.schemas import AnswerSchemas
from xds.conformance.schemas import shipped as shipped_schemas
from xds.conformance.substitution import (
    PATIENT_ID_SCHEMES,
    Prepared,
    evaluate_reports,
    load_metadata,
    prepare_submission,
)
from xds.conformance.xua import XuaIdentity, test_user, user_for_section
from xds.metadata import vocabulary as v
from xds.metadata.registry_response import parse_registry_response

Outcome = Literal["passed", "failed", "not applicable"]
StepKey = tuple[str, str, str]  # test, section, step

# ExpectedStatus words and the status URNs they stand for (ebRS 3.0 §2.1.3; ITI TF-3 §4.2.4.2)
STATUS_URNS = {
    "Success": v.RESPONSE_SUCCESS,
    "Failure": v.RESPONSE_FAILURE,
    "PartialSuccess": v.RESPONSE_PARTIAL_SUCCESS,
}
FAULT = "Fault"
# the kit's name for the responding gateway's homeCommunityId, which the toolkit takes from its site
# configuration (UseReport reportName="$testdata_home$")
SITE_HOME = "$testdata_home$"
# transactions that change what the registry or repository holds
WRITES = frozenset(
    {
        tp.REGISTER,
        tp.PROVIDE_AND_REGISTER,
        tp.METADATA_UPDATE,
        tp.RESTRICTED_UPDATE,
        tp.REMOVE_METADATA,
        tp.PATIENT_IDENTITY_FEED,
    }
)
# the toolkit's initiating-gateway orchestration files a data set of test 15807 in Community 1 under
# the patient of some feed tests (12300: "15824 is Single documents in Community 1", "15825 is Two
# documents in Community 1"); 15807's sections name no patient of their own
FEED_DATA_SETS = {"15824": ("15807", "onedoc1"), "15825": ("15807", "twodoc")}
# a test whose title says it runs over TLS (12028 "Submit and Retrieve document over TLS")
_OVER_TLS = re.compile(r"\bover TLS\b", re.IGNORECASE)

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
    # HTTPS with client certificates: (trust anchors, the runner's certificate, its key), PEM files
    tls: tuple[str, str, str] | None = None
    xca_query_url: str | None = None  # ITI-38 endpoint of the responding gateway under test
    xca_retrieve_url: str | None = None  # ITI-39 endpoint of the responding gateway under test
    home: str | None = None  # its homeCommunityId (the kit's site-configured $testdata_home$)

    def client(self) -> httpx.Client:
        """An HTTP client for the target: with its trust anchors and the runner's certificate over TLS."""
        if self.tls is None:
            return httpx.Client(timeout=60)
        import ssl

        anchors, cert, key = self.tls
        context = ssl.create_default_context(cafile=anchors)
        context.load_cert_chain(cert, key)
        return httpx.Client(timeout=60, verify=context)


@dataclass
class Answer:
    status: str  # the answer's status URN as sent, or "Fault"
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # code, context, severity
    element: etree._Element | None = None
    attachments: dict = field(default_factory=dict)  # Content-ID -> Attachment of an MTOM answer
    invalid: list[str] = field(default_factory=list)  # why the answer fails its schema


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
        schemas: AnswerSchemas | None = None,  # default: the schemas shipped with xds
        xua: XuaIdentity | None = None,  # the identity provider the target trusts, for XUA tests
    ) -> None:
        self.xua = xua
        self._user: str | None = None  # the XUA test user of the test running
        self.testkit = testkit
        self.target = target
        self.authority = authority
        self.source_id = source_id
        self.client = client or target.client()
        self.schemas = schemas or shipped_schemas()
        self.reports: dict[StepKey, dict[str, str]] = {}
        self.prepared: dict[StepKey, Prepared] = {}
        self.answers: dict[StepKey, tuple[str, etree._Element]] = {}  # step -> (transaction, answer)
        self.requests: dict[StepKey, etree._Element] = {}  # step -> the request it sent
        self.skipped: dict[StepKey, str] = {}  # not-applicable steps and why
        self.skipped_writes: dict[str, StepKey] = {}  # test -> its first write that was not applicable
        self.provided: dict[str, rt.Provided] = {}  # uniqueId -> document sent with ITI-41
        self.section_patients: dict[tuple[str, str], str] = {}
        self._current: StepKey = ("", "", "")
        self._current_transaction = ""
        # the patient a test's UseReport named, kept for its later sections
        self.test_patients: dict[str, str] = {}
        self._running: set[str] = set()
        self._ran: set[str] = set()
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
        self.skipped_writes.pop(test.id, None)
        results: list[StepResult] = []
        # against a deployment that requires the trust model every test asks with an assertion:
        # an XUA test as its test user, any other (a feed, the data a query test reads) as a valid one
        user = test_user(test.id, test.collections) or ("valid" if self.xua is not None else None)
        outer_user, self._user = self._user, user
        try:
            for section in test.sections:
                for step in section.steps:
                    results.append(self._run_step(test, section, step))
        finally:
            self._user = outer_user
            self._running.discard(test.id)
            self._ran.add(test.id)
        return results

    def _run_step(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> StepResult:
        key = (test.id, section.name, step.id)

        def result(outcome: Outcome, reason: str = "") -> StepResult:
            if outcome == "not applicable":
                self.skipped[key] = reason
                if step.transaction in WRITES:
                    self.skipped_writes.setdefault(test.id, key)
            return StepResult(test.id, section.name, step.id, step.transaction, outcome, reason)

        self._current = key
        self._current_transaction = step.transaction or ""
        if _OVER_TLS.search(test.title) and not self._over_tls():
            return result(
                "not applicable", "the test runs over TLS and the target's endpoints are plain HTTP"
            )
        user = test_user(test.id, test.collections)
        if user is not None and self.xua is None:
            return result(
                "not applicable",
                f"an XUA test (test user {user!r}): it needs a deployment that trusts the runner's "
                "identity provider (one xds conformance starts itself)",
            )
        earlier = self.skipped_writes.get(test.id)
        if earlier is not None:
            # what the registry holds now is not what the plan assumes from here on
            return result(
                "not applicable",
                f"follows step {earlier[1]}/{earlier[2]}, whose changes it assumes and which was not "
                f"applicable ({self.skipped[earlier]})",
            )
        handlers = {
            tp.NULL: self._null,
            tp.PATIENT_IDENTITY_FEED: self._feed,
            tp.REGISTER: self._register,
            tp.PROVIDE_AND_REGISTER: self._provide,
            tp.RETRIEVE: self._retrieve,
            tp.STORED_QUERY: self._query,
            tp.XC_QUERY: self._xc_query,
            tp.XC_RETRIEVE: self._xc_retrieve,
            tp.METADATA_UPDATE: self._update,
            tp.RESTRICTED_UPDATE: self._update,
            tp.REMOVE_METADATA: self._remove,
        }
        handler = handlers.get(step.transaction or "")
        if handler is None and not step.transaction and step.flags.new_patient_id:
            handler = self._new_patient
        if handler is None:
            return result(
                "not applicable", f"{step.transaction or 'no transaction'} is not sent by this runner yet"
            )
        try:
            return result(*handler(test, section, step))
        except _NotApplicable as exc:
            return result("not applicable", str(exc))
        except _Unresolved as exc:
            return result("failed", str(exc))

    def _over_tls(self) -> bool:
        urls = [self.target.registry_url, self.target.repository_url]
        return all(url is None or url.startswith("https://") for url in urls)

    # --- what earlier steps produced --------------------------------------------------------------
    def _need(self, key: StepKey, present: bool) -> None:
        """A value of step ``key`` is needed: run its test if it has not run; N/A if that step was."""
        if not present and key[0] not in self._ran and key[0] not in self._running:
            # the dependency's steps become current while it runs; this step's answer is still ours
            current, transaction = self._current, self._current_transaction
            self._run_dependency(key[0])
            self._current, self._current_transaction = current, transaction
        if key in self.skipped:
            raise _NotApplicable(
                f"needs step {'/'.join(k for k in key if k)}, which was not applicable: {self.skipped[key]}"
            )

    def _symbols(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> dict[str, str]:
        symbols: dict[str, str] = {}
        for use in step.use_report:
            if use.report_name == SITE_HOME and self.target.home:
                symbols[use.use_as] = self.target.home  # the toolkit's site configuration, not a report
                continue
            source_test = use.test or test.id
            source_section = section.name if use.section == tp.THIS_SECTION else use.section
            key = (self._canonical_test(source_test), source_section, use.step)
            self._need(key, key in self.reports or source_test == test.id)
            saved = self.reports.get(key, {})
            if use.report_name == "$patientid$" and key[0] in self.test_patients:
                # every step of a test knows the test's patient, as the toolkit's logs do
                saved = {"$patientid$": self.test_patients[key[0]], **saved}
            if use.report_name not in saved:
                raise _Unresolved(
                    f"UseReport {use.report_name} from {source_test}/{source_section}/{use.step} has no value"
                )
            symbols[use.use_as] = saved[use.report_name]
        for use in step.use_id:
            symbols[use.symbol] = self._use_id(test, section, use)
        for use in step.use_xpath:
            symbols[use.symbol] = self._use_xpath(test, section, use)
        return symbols

    def _locate(self, test: tp.Test, section: tp.Section, testdir: str | None) -> tuple[str, str]:
        """The (test, section) a ``testdir`` names, as the toolkit resolves it (see ``tp.resolve_testdir``)."""
        source_dir = tp.resolve_testdir(section.directory, testdir, test.directory)
        if source_dir == test.directory or source_dir == section.directory:
            return test.id, section.name
        if source_dir.parent == test.directory:
            return test.id, source_dir.name
        if source_dir.parent.name in tp.TEST_FOLDERS:
            # another test that is its own single section (testdir="../../12374")
            return self._canonical_test(source_dir.name), ""
        # another test's section, e.g. testdir="../../12346/single_doc"
        return self._canonical_test(source_dir.parent.name), source_dir.name

    def _use_id(self, test: tp.Test, section: tp.Section, use: tp.UseId) -> str:
        """The value an earlier step (of this test, or of the test ``testdir`` names) recorded."""
        source_test, source_section = self._locate(test, section, use.testdir)
        key = (source_test, source_section, use.step)
        self._need(key, key in self.prepared or source_test == test.id)
        prepared = self.prepared.get(key)
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

    def _answer_of(
        self, test: tp.Test, section: tp.Section, testdir: str | None, step_id: str
    ) -> tuple[str, etree._Element]:
        """The answer an earlier step received (``ReferenceMetadata``, ``UseXPath``)."""
        source_test, source_section = self._locate(test, section, testdir)
        key = (source_test, source_section, step_id)
        self._need(key, key in self.answers or source_test == test.id)
        if key not in self.answers:
            raise _Unresolved(f"step {source_test}/{source_section}/{step_id} has no answer")
        return self.answers[key]

    def _use_xpath(self, test: tp.Test, section: tp.Section, use: tp.UseXPath) -> str:
        transaction, answer = self._answer_of(test, section, use.testdir, use.step)
        found = step_log([(use.step, transaction, answer, None)]).xpath(use.xpath)
        value = _string_value(found)
        if value is None:
            raise _Unresolved(f"UseXPath {use.symbol} selects nothing in step {use.step}'s answer")
        return base64.b64decode(value).decode("utf-8", "replace") if use.decode_base64 else value

    def _canonical_test(self, test_id: str) -> str:
        try:
            return tp.load_test(self.testkit, test_id).id
        except tp.TestNotFound:
            return test_id

    def _run_dependency(self, test_id: str) -> None:
        if test_id in self._running:
            return
        try:
            self.run_test(test_id)
        except tp.TestNotFound:
            raise _NotApplicable(f"needs test {test_id}, which the kit lacks") from None

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
        if ok and test.id in FEED_DATA_SETS:
            problem = self._file_data_set(pid, *FEED_DATA_SETS[test.id])
            if problem:
                return "failed", problem
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

    def _file_data_set(self, pid: str, test_id: str, section_name: str) -> str:
        """File section ``section_name`` of test ``test_id`` under ``pid`` (``FEED_DATA_SETS``);
        what went wrong, or ``""``."""
        data = tp.load_test(self.testkit, test_id)
        current, transaction = self._current, self._current_transaction
        outer_user, self._user = self._user, "valid" if self.xua is not None else None
        try:
            for section in data.sections:
                if section.name != section_name:
                    continue
                self.section_patients[(data.id, section.name)] = pid
                for step in section.steps:
                    done = self._run_step(data, section, step)
                    if done.outcome != "passed":
                        return f"data set {data.id}/{section.name}/{step.id}: {done.outcome} {done.reason}"
        finally:
            self._current, self._current_transaction = current, transaction
            self._user = outer_user
        return ""

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
        return self._submit(test, section, step, v.ACTION_REGISTER)

    def _update(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-57 (MuTransaction) / ITI-92 (RmuTransaction): a SubmitObjectsRequest prepared as a
        registration is, sent with the update's action (ITI TF-2b §3.57.4.1.2, §3.92.4.1.2)."""
        action = (
            v.ACTION_UPDATE_DOCUMENT_SET
            if step.transaction == tp.METADATA_UPDATE
            else v.ACTION_RESTRICTED_UPDATE
        )
        return self._submit(test, section, step, action)

    def _submit(
        self, test: tp.Test, section: tp.Section, step: tp.TestStep, action: str
    ) -> tuple[Outcome, str]:
        if self.target.registry_url is None:
            return "not applicable", "the target has no registry"
        prepared = self._prepare(test, section, step)
        answer = self._send(self.target.registry_url, action, prepared.element)
        return self._judge_submission(test, section, step, prepared, answer)

    def _remove(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-62: the step's RemoveObjectsRequest, its ``$symbol$``s filled in (ITI TF-2b §3.62.4.1)."""
        if self.target.registry_url is None:
            return "not applicable", "the target has no registry"
        request = load_metadata(step, self._symbols(test, section, step))
        answer = self._send(self.target.registry_url, v.ACTION_DELETE_DOCUMENT_SET, request)
        self.reports[(test.id, section.name, step.id)] = evaluate_reports(
            step.reports, request, answer.element
        )
        return judge(step, answer)

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
        data, content_type = build_mtom_request(
            v.ACTION_PROVIDE_AND_REGISTER,
            body,
            parts,
            to=url,
            secure=self._securer(prepared.element, {cid: data for cid, _, data in parts}),
        )
        self.requests[self._current] = prepared.element
        answer = self._post(url, data, content_type)
        if answer.status == v.RESPONSE_SUCCESS:
            self._record_provided(step, prepared)
        return self._judge_submission(test, section, step, prepared, answer)

    def _record_provided(self, step: tp.TestStep, prepared: Prepared) -> None:
        """Remember which file and mimeType each provided document's uniqueId stands for."""
        mime_types = {
            e.get("id", ""): e.get("mimeType", "")
            for e in prepared.element.iter(f"{{{v.NS_RIM}}}ExtrinsicObject")
        }
        for symbolic_id, path in step.documents.items():
            uid = prepared.assigned_uids.get(symbolic_id)
            if uid:
                mime = mime_types.get(prepared.assigned_uuids.get(symbolic_id, symbolic_id), "")
                self.provided[uid] = rt.Provided(path, mime)

    def _xc_retrieve(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-39 to the responding gateway under test, judged as ITI-43 (ITI TF-2b §3.39)."""
        if self.target.xca_retrieve_url is None:
            return "not applicable", "the target has no responding gateway (ITI-39 endpoint)"
        return self._retrieve(test, section, step, self.target.xca_retrieve_url, v.ACTION_XCA_RETRIEVE)

    def _retrieve(
        self,
        test: tp.Test,
        section: tp.Section,
        step: tp.TestStep,
        url: str | None = None,
        action: str = v.ACTION_RETRIEVE,
    ) -> tuple[Outcome, str]:
        """ITI-43: the step's RetrieveDocumentSetRequest, its answer judged in full (``xds.conformance.retrieve``)."""
        url = url or self.target.repository_url
        if url is None:
            return "not applicable", "the target has no repository"
        transaction = step.transaction_element
        assert transaction is not None
        symbols = self._symbols(test, section, step)
        request = load_metadata(step, symbols, None)
        reference_metadata = [
            self._answer_of(test, section, e.get("testdir"), e.get("step", ""))[1]
            for e in transaction.findall("ReferenceMetadata")
        ]
        references = {
            symbols.get(e.get("uid", ""), e.get("uid", "")): tp.resolve_file(
                section.directory, (e.text or "").strip(), test.directory
            )
            for e in transaction.findall("ReferenceDocument")
        }
        answer = self._send(url, action, request)
        outcome, reason = judge(step, answer)
        if outcome != "passed" or answer.element is None:
            return outcome, reason
        documents = rt.retrieved_documents(answer.element, answer.attachments)
        expected_mime = transaction.findtext("ExpectedMimeType")
        verdict = rt.judge_documents(
            documents,
            rt.requested(request),
            references,
            self.provided,
            expected_mime.strip() if expected_mime is not None else None,
        )
        for query_answer in reference_metadata:
            verdict.problems += rt.judge_reference_metadata(documents, query_answer)
        symbols.update(rt.document_symbols(documents))
        verdict.unjudged += rt.unresolved_assertions(step.assertions, symbols)
        if not verdict.unjudged:
            verdict.problems += judge_assertions(
                step.assertions, step.id, tp.RETRIEVE, None, symbols, log=self._section_log(test, section)
            )
        if step.expected_contents is not None and len(step.expected_contents):
            verdict.unjudged += [
                f"ExpectedContents/{c.tag}" for c in step.expected_contents if isinstance(c.tag, str)
            ]
        if verdict.problems:
            return "failed", "; ".join(verdict.problems)
        if verdict.unjudged:
            return "not applicable", f"not judged by this runner: {', '.join(verdict.unjudged)}"
        return "passed", "; ".join(verdict.notes)

    def _section_log(self, test: tp.Test, section: tp.Section) -> etree._ElementTree:
        """The toolkit's log of a section so far: each step that was answered, with its answer."""
        return step_log(
            [
                (key[2], transaction, element, self.requests.get(key))
                for key, (transaction, element) in self.answers.items()
                if key[:2] == (test.id, section.name)
            ]
        )

    def _null(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """NullTransaction: XPath assertions over the section's log and reported values."""
        if step.assertions is None or step.assertions.find("Assert") is None:
            return "not applicable", "the step has nothing to judge (no assertion)"
        symbols = self._symbols(test, section, step)
        log = self._section_log(test, section)
        if step.assertions.find("DataRef") is not None and not len(log.getroot()):
            earlier = [k for k in self.skipped if k[:2] == (test.id, section.name)]
            if earlier:
                raise _NotApplicable(
                    f"needs the answer of step {earlier[-1][2]}, which was not applicable: {self.skipped[earlier[-1]]}"
                )
            return "failed", "the answer these assertions inspect was not produced"
        problems = judge_assertions(step.assertions, step.id, tp.NULL, None, symbols, log=log)
        return ("failed", "; ".join(problems)) if problems else ("passed", "")

    def _xc_query(self, test: tp.Test, section: tp.Section, step: tp.TestStep) -> tuple[Outcome, str]:
        """ITI-38 to the responding gateway under test, judged as ITI-18 (ITI TF-2b §3.38)."""
        if self.target.xca_query_url is None:
            return "not applicable", "the target has no responding gateway (ITI-38 endpoint)"
        return self._query(test, section, step, self.target.xca_query_url, v.ACTION_XCA_QUERY)

    def _query(
        self,
        test: tp.Test,
        section: tp.Section,
        step: tp.TestStep,
        url: str | None = None,
        action: str | None = None,
    ) -> tuple[Outcome, str]:
        """ITI-18 / ITI-51: the step's AdhocQueryRequest, judged by status, errors and ExpectedContents."""
        url = url or self.target.registry_url
        if url is None:
            return "not applicable", "the target has no registry"
        symbols = self._symbols(test, section, step)
        request = load_metadata(step, symbols)
        transaction = step.transaction_element
        if transaction is not None and transaction.find("CleanParams") is not None:
            clean_params(request)
        answer = self._send(url, action or query_action(request), request)
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
            None,
            symbols,
            log=self._section_log(test, section),
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

    def _send(self, url: str, action: str, request: etree._Element) -> Answer:
        from xds.soap.envelope import build_request

        self.requests[self._current] = request
        data, content_type = build_request(action, etree.tostring(request), to=url)
        secure = self._securer(request)
        return self._post(url, secure(data) if secure else data, content_type)

    def _securer(self, request: etree._Element, parts: dict[str, bytes] | None = None):  # type: ignore[no-untyped-def]
        """For a step of an XUA test: what adds the test user's assertion and signature to its envelope."""
        if self.xua is None or self._user is None:
            return None
        identity, user = self.xua, user_for_section(self._user, self._current[1])
        patient = _patient_in(request) or self._session_patient_or_blank()
        return lambda envelope: identity.secure(envelope, user, patient, parts)

    def _session_patient_or_blank(self) -> str:
        return self.reports.get(("15817", "pif", "step"), {}).get("$patientid$", "")

    def _post(self, url: str, data: bytes, content_type: str) -> Answer:
        """Send a SOAP message; the answer kept for later steps (ReferenceMetadata, DataRef, UseXPath)."""
        response = self.client.post(url, content=data, headers={"Content-Type": content_type})
        answer = self._answer(response)
        if answer.element is not None:
            self.answers[self._current] = (self._current_transaction, answer.element)
        return answer

    def _answer(self, response: httpx.Response) -> Answer:
        """The answer's status URN and errors (alone, in a query answer or in a retrieve answer), schema-checked."""
        from xds.soap.envelope import SoapFault
        from xds.soap.mtom import parse_message

        try:
            message = parse_message(response.headers.get("content-type", ""), response.content)
        except SoapFault as fault:
            return Answer(FAULT, [(fault.code, fault.reason, v.SEVERITY_ERROR)])
        body = message.body
        invalid = self.schemas.problems(body, message.attachments)
        rr = (
            body
            if body.tag in (f"{{{v.NS_RS}}}RegistryResponse", f"{{{v.NS_QUERY}}}AdhocQueryResponse")
            else body.find(f"{{{v.NS_RS}}}RegistryResponse")
        )
        if rr is None:
            return Answer(
                FAULT, [("", f"unexpected answer {body.tag}", v.SEVERITY_ERROR)], body, invalid=invalid
            )
        status, errors = parse_registry_response(rr)
        return Answer(
            status,
            [(e.code, e.context, e.severity) for e in errors],
            message.body,
            message.attachments,
            invalid,
        )


class _NotApplicable(Exception):
    """A step cannot be judged: it needs what a not-applicable step, or a test the kit lacks, would give."""


class _Unresolved(Exception):
    """A step needs a value no earlier step produced."""


def judge(step: tp.TestStep, answer: Answer) -> tuple[Outcome, str]:
    """Compare an answer with the step's expectations (ExpectedStatus, ErrorCode, ErrorMessage)."""
    expected = step.expected_status or ("Success",)
    problems: list[str] = []
    if answer.invalid:
        problems.append("the answer does not validate against its schema: " + "; ".join(answer.invalid))
    wanted = {STATUS_URNS.get(word, word) for word in expected}
    if answer.status not in wanted:
        short = {urn: word for word, urn in STATUS_URNS.items()}
        problems.append(
            f"expected status {'/'.join(expected)}, got {short.get(answer.status, answer.status)}"
        )
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


def _patient_in(request: etree._Element) -> str:
    """The patient a request is about: a submission's patientId, or a query's patient parameter."""
    r = "{" + v.NS_RIM + "}"
    for identifier in request.iter(r + "ExternalIdentifier"):
        if identifier.get("identificationScheme") in PATIENT_ID_SCHEMES:
            return identifier.get("value", "")
    for slot in request.iter(r + "Slot"):
        if slot.get("name", "").endswith("PatientId"):
            value = (slot.findtext(f"{r}ValueList/{r}Value") or "").strip().strip("()").strip("'")
            if value:
                return value
    return ""


def _string_value(found: object) -> str | None:
    if isinstance(found, list):
        if not found:
            return None
        found = found[0]
    if isinstance(found, etree._Element):
        return "".join(found.itertext()).strip()
    return str(found).strip()


def summary(results: list[StepResult]) -> str:
    passed = sum(r.outcome == "passed" for r in results)
    failed = sum(r.outcome == "failed" for r in results)
    return f"{passed} passed, {failed} failed"


__all__ = ["Session", "Target", "StepResult", "judge", "summary"]
