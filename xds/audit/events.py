"""One audit message per transaction, as ITI TF-2a §3.20.7 and each transaction's audit section say.

A SOAP transaction is described by an :class:`Exchange` — what was asked (the payload the handler
saw, i.e. the signed Body when the request was verified), what was answered (its RegistryResponse
status, or the fault), who asked (the verified security context) and the two network ends. The
same builder serves the responding side (:func:`responder_events`) and the requesting side
(:func:`requester_events`); only the action code and who is "us" differ:

- ActiveParticipant Source (RoleIDCode 110153, UserIsRequestor true): the requesting system,
  UserID its wsa:ReplyTo, NetworkAccessPointID its address;
- ActiveParticipant Destination (110152): the responding endpoint, UserID its URL;
- ActiveParticipant human requestor (UserIsRequestor true) from the verified XUA assertion:
  UserID the HPR number (or subject), UserName ``alias<user@issuer>``, AlternativeUserID the
  organisation, RoleIDCode the trust framework role; the PurposeOfUse in EventIdentification;
- ParticipantObjects: the patient (TypeCode 1, role 1, ID type RFC-3881 "2"), the query (2/24, ID
  type the transaction, ID the stored query id, ParticipantObjectQuery the base64 request,
  QueryEncoding detail), the submission set (2/20, uniqueId) and each document (2/3, ID type
  RFC-3881 "9", Repository Unique Id and ihe:homeCommunityID details).

A transaction whose answer mixes success and failure (ITI-43 PartialSuccess) gets two messages,
one per outcome (PS3.15 A.5.2: "not a single message with mixed results"). A request refused by a
security check is audited as that transaction with EventOutcomeIndicator 8 (serious failure) and
the refusal in EventOutcomeDescription.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lxml import etree

from xds.audit import message as m
from xds.audit.requester import Requester
from xds.audit.transactions import ITI_8, Transaction, by_action
from xds.metadata.model import Submission

NS_RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS_QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
NS_XDSB = "urn:ihe:iti:xds-b:2007"
_RIM = "{" + NS_RIM + "}"
_X = "{" + NS_XDSB + "}"
PATIENT_PARAMETERS = frozenset(
    {"$XDSDocumentEntryPatientId", "$XDSSubmissionSetPatientId", "$XDSFolderPatientId", "$patientId"}
)
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
ROLE_SYSTEM = "2.16.578.1.12.4.1.1.9060"  # the trust framework's role codes (Volven 9060)
PURPOSE_SYSTEM = "2.16.840.1.113883.5.8"  # HL7 ActReason (TREAT, ETREAT, COC, BTG)
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
STATUS = re.compile(rb"ResponseStatusType:(Success|PartialSuccess|Failure)")  # in an answer's bytes
PROCESS_ID = str(os.getpid())

# Who owns documents (uniqueId -> patient), when a repository does not know: the registry's facts.
OwnerLookup = Callable[[list[str]], dict[str, str]]


@dataclass
class Exchange:
    """One SOAP transaction as seen by one side."""

    action: str
    request: etree._Element | None  # the payload (first child of the processed Body)
    response: etree._Element | bytes | None = None
    fault: str = ""  # the reason of a SOAP fault answered instead
    refused: bool = False  # the fault came from a security check
    security: Requester = field(default_factory=Requester)
    client: str = ""  # the requesting system's address
    server: str = ""  # the responding endpoint's URL
    reply_to: str = ""
    home_community_id: str = ""
    status: str | None = None  # the answer's RegistryResponse status, when read already
    objects: list[m.ParticipantObject] | None = None  # the request's objects, when read already
    patients: list[str] | None = None  # whom the objects concern, as the handler found (ITI-62)
    process_id: str = PROCESS_ID  # the process that answered (or asked)


def responder_events(
    ex: Exchange, source: m.AuditSource, owners: OwnerLookup | None = None
) -> list[m.AuditMessage]:
    """The audit messages of a transaction this service answered."""
    tx = by_action(ex.action)
    if tx is None:
        return []
    return _events(ex, tx, tx.responder_action, source, owners, responder=True)


def requester_events(ex: Exchange, source: m.AuditSource) -> list[m.AuditMessage]:
    """The audit messages of a transaction this process (a client, a gateway) asked."""
    tx = by_action(ex.action)
    if tx is None:
        return []
    return _events(ex, tx, tx.requester_action, source, None, responder=False)


def _events(
    ex: Exchange,
    tx: Transaction,
    action: str,
    source: m.AuditSource,
    owners: OwnerLookup | None,
    *,
    responder: bool,
) -> list[m.AuditMessage]:
    outcome, description = _outcome(ex)
    base = _participants(ex, responder)
    who = ex.security
    purpose = [m.Code(who.purpose_of_use, PURPOSE_SYSTEM, who.purpose_of_use)] if who.purpose_of_use else []

    def message(objects: list[m.ParticipantObject], outcome: str, description: str) -> m.AuditMessage:
        return m.AuditMessage(
            event_id=tx.event_for(responder),
            action=action,
            outcome=outcome,
            type_codes=[tx.type_code],
            participants=base,
            source=source,
            objects=objects,
            outcome_description=description,
            purpose_of_use=purpose,
        )

    body = ex.request
    if ex.objects is not None:
        return [message(ex.objects, outcome, description)]
    if body is None:
        return [message(_patients([who.patient] if who.patient else []), outcome, description)]
    if tx.kind == "query":
        return [message(_query_objects(tx, body, ex.home_community_id), outcome, description)]
    if tx.kind == "submission":
        return [message(submission_objects(body), outcome, description)]
    if tx.kind in ("documents", "references"):
        return _document_messages(ex, body, who, owners, message, outcome, description)
    return [message([], outcome, description)]


def _outcome(ex: Exchange) -> tuple[str, str]:
    if ex.fault:
        kind = "refused by the security policy: " if ex.refused else "SOAP fault: "
        return m.SERIOUS_FAILURE, kind + ex.fault
    status = response_status(ex.response) if ex.status is None else ex.status
    if status == "Failure":
        return m.SERIOUS_FAILURE, "the request failed (RegistryResponse status Failure)"
    if status == "PartialSuccess":
        return m.MINOR_FAILURE, "partial success"
    return m.SUCCESS, ""


def response_status(response: etree._Element | bytes | None) -> str:
    """Success / PartialSuccess / Failure of a RegistryResponse-bearing answer ("" when none)."""
    if response is None:
        return ""
    if isinstance(response, bytes):
        found = STATUS.search(response, 0, 8192)
        return found.group(1).decode() if found else ""
    status = response.get("status")
    if status is None:
        inner = response.find("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryResponse")
        status = inner.get("status") if inner is not None else ""
    return (status or "").rsplit(":", 1)[-1]


def _participants(ex: Exchange, responder: bool) -> list[m.ActiveParticipant]:
    source = m.ActiveParticipant(
        user_id=ex.reply_to or ANONYMOUS,
        requestor=True,
        roles=[m.ROLE_SOURCE],
        alternative_user_id="" if responder else ex.process_id,
        network_id=ex.client,
        network_type=m.IP_ADDRESS if ex.client and ex.client[0].isdigit() else m.MACHINE_NAME,
    )
    host = _host(ex.server)
    destination = m.ActiveParticipant(
        user_id=ex.server or "-",
        requestor=False,
        roles=[m.ROLE_DESTINATION],
        alternative_user_id=ex.process_id if responder else "",
        network_id=host,
        network_type=m.IP_ADDRESS if host[:1].isdigit() else m.MACHINE_NAME,
    )
    out = [source, destination]
    who = ex.security
    if who.known:
        out.append(
            m.ActiveParticipant(
                user_id=who.user_id(),
                requestor=True,
                user_name=who.user_name(),
                alternative_user_id=who.organisation,
                roles=[m.Code(who.role, ROLE_SYSTEM, who.role)] if who.role else [],
            )
        )
    return out


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    host = rest.split("/", 1)[0]
    return host.rsplit(":", 1)[0].strip("[]") if host else ""


def _patients(ids: Iterable[str]) -> list[m.ParticipantObject]:
    seen: list[str] = []
    for pid in ids:
        if pid and pid not in seen:
            seen.append(pid)
    return [m.ParticipantObject(pid, m.PATIENT_NUMBER, m.PERSON, m.ROLE_PATIENT) for pid in seen]


def _query_objects(tx: Transaction, body: etree._Element, home: str) -> list[m.ParticipantObject]:
    patients: list[str] = []
    query_id = ""
    for el in body.iter(_RIM + "AdhocQuery"):
        query_id = el.get("id") or ""
        home = el.get("home") or home
        for slot in el.iterchildren(_RIM + "Slot"):
            if slot.get("name") in PATIENT_PARAMETERS:
                for value in slot.iter(_RIM + "Value"):
                    patients += [p.strip().strip("'") for p in (value.text or "").strip("()").split(",")]
        break
    details = [("QueryEncoding", "UTF-8")]
    if home:
        details.append(("ihe:homeCommunityID", home))
    query = m.ParticipantObject(
        query_id or "-",
        tx.type_code,
        m.SYSTEM_OBJECT,
        m.ROLE_QUERY,
        query=etree.tostring(body, encoding="utf-8"),
        details=details,
    )
    return _patients(patients) + [query]


def submission_objects(body: etree._Element) -> list[m.ParticipantObject]:
    """The patient and the SubmissionSet of a submission (ITI-41, ITI-42, ITI-57, ITI-92)."""
    patient = unique_id = ""
    objects = body.find(f".//{_RIM}RegistryObjectList")  # the first, near the start
    packages = objects.iterchildren(_RIM + "RegistryPackage") if objects is not None else ()
    for ext in (e for p in packages for e in p.iterchildren(_RIM + "ExternalIdentifier")):
        scheme = ext.get("identificationScheme")
        if scheme == SS_UNIQUE_ID:
            unique_id = ext.get("value") or ""
        elif scheme == SS_PATIENT_ID:
            patient = ext.get("value") or ""
    return submission_objects_of(patient, unique_id)


def submission_ids(sub: Submission) -> tuple[str, str]:
    """The SubmissionSet's patient and uniqueId as :func:`submission_objects` reads them from the
    request, from the submission a handler parsed already (for the audit: ``SoapRequest.facts``)."""
    patient = unique_id = ""
    for ext in (e for p in sub.packages for e in p.external_ids):
        if ext.identification_scheme == SS_UNIQUE_ID:
            unique_id = ext.value or ""
        elif ext.identification_scheme == SS_PATIENT_ID:
            patient = ext.value or ""
    return patient, unique_id


def submission_objects_of(patient: str, unique_id: str) -> list[m.ParticipantObject]:
    """The ParticipantObjects of a submission's patient and SubmissionSet (ITI-42: ITI TF-2b §3.42.5.1)."""
    out = _patients([patient])
    if unique_id:
        out.append(m.ParticipantObject(unique_id, m.SUBMISSION_SET, m.SYSTEM_OBJECT, m.ROLE_JOB))
    return out


def _document_requests(body: etree._Element) -> list[tuple[str, str, str]]:
    """(documentUniqueId, repositoryUniqueId, homeCommunityId) of each DocumentRequest."""
    out = []
    for req in body.iter(_X + "DocumentRequest", "{urn:ihe:iti:rmd:2017}DocumentRequest"):
        values = {etree.QName(c).localname: (c.text or "").strip() for c in req}
        out.append(
            (
                values.get("DocumentUniqueId", ""),
                values.get("RepositoryUniqueId", ""),
                values.get("HomeCommunityId", ""),
            )
        )
    if not out:  # ITI-62: ObjectRefs to delete
        for ref in body.iter(_RIM + "ObjectRef"):
            out.append((ref.get("id") or "", "", ref.get("home") or ""))
    return out


def _document_messages(
    ex: Exchange,
    body: etree._Element,
    who: Requester,
    owners: OwnerLookup | None,
    message: Callable[[list[m.ParticipantObject], str, str], m.AuditMessage],
    outcome: str,
    description: str,
) -> list[m.AuditMessage]:
    wanted = _document_requests(body)
    uids = [uid for uid, _, _ in wanted if uid]
    patient_of: dict[str, str] = {}
    if who.patient:
        patient_of = dict.fromkeys(uids, who.patient)
    elif ex.patients is not None:
        pass
    elif owners is not None and uids:
        try:
            patient_of = owners(uids)
        except Exception:  # the audit event goes out without the patient rather than not at all
            patient_of = {}
    delivered = _delivered(ex) if outcome == m.MINOR_FAILURE else None
    groups: list[tuple[str, str, list[tuple[str, str, str]]]] = []
    if delivered is None:
        groups.append((outcome, description, wanted))
    else:
        ok = [w for w in wanted if w[0] in delivered]
        failed = [w for w in wanted if w[0] not in delivered]
        if ok:
            groups.append((m.SUCCESS, "", ok))
        if failed:
            groups.append((m.MINOR_FAILURE, "not returned: " + ", ".join(w[0] for w in failed), failed))
    out = []
    for result, text, docs in groups:
        named = [patient_of.get(uid, "") for uid, _, _ in docs]
        objects = _patients(named if ex.patients is None or who.patient else ex.patients)
        for uid, repo, home in docs:
            details = [("Repository Unique Id", repo)] if repo else []
            if home:
                details.append(("ihe:homeCommunityID", home))
            objects.append(
                m.ParticipantObject(uid, m.REPORT_NUMBER, m.SYSTEM_OBJECT, m.ROLE_REPORT, details=details)
            )
        out.append(message(objects, result, text))
    return out


def _delivered(ex: Exchange) -> set[str] | None:
    """The DocumentUniqueIds an ITI-43 answer carries (None when it cannot be told)."""
    response = ex.response
    if isinstance(response, bytes):
        from xds import safexml

        try:
            response = safexml.parse(response)
        except Exception:
            return None
    if response is None:
        return None
    return {
        (el.text or "").strip()
        for doc in response.iter(_X + "DocumentResponse")
        for el in doc.iterchildren(_X + "DocumentUniqueId")
    }


# --- ITI-8 ------------------------------------------------------------------------------------------
def feed_events(raw: bytes, ack: str, peer: str, source: m.AuditSource) -> list[m.AuditMessage]:
    """ITI-8 Patient Identity Feed as the receiver audits it (ITI TF-2a §3.8.5.1): Patient Record,
    C for A01/A04/A05, U for A08 and for the surviving patient of an A40 merge, D for each merged
    (MRG-1) patient; Source the sending application|facility, Destination the receiving one."""
    text = raw.decode("utf-8", "replace")
    segments = [s for s in re.split(r"[\r\n]+", text) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        return []
    sep = segments[0][3]
    msh = segments[0].split(sep)
    comp = msh[1][:1] if len(msh) > 1 else "^"

    def field_of(seg: list[str], n: int) -> str:
        return seg[n] if len(seg) > n else ""

    trigger = field_of(msh, 8).split(comp)[1:2]
    event = trigger[0] if trigger else ""
    control = field_of(msh, 9)
    sender = f"{field_of(msh, 2)}|{field_of(msh, 3)}"
    receiver = f"{field_of(msh, 4)}|{field_of(msh, 5)}"
    pid = next((s.split(sep) for s in segments if s.startswith("PID")), [])
    patients = [p for p in field_of(pid, 3).split(field_of(msh, 1)[1:2] or "~") if p]
    merged = [s.split(sep)[1] for s in segments if s.startswith("MRG") and len(s.split(sep)) > 1]
    ack_code = ack.split("MSA" + sep, 1)[-1][:2] if "MSA" in ack else ""
    outcome = m.SUCCESS if ack_code in ("AA", "CA") else m.SERIOUS_FAILURE
    described = "" if outcome == m.SUCCESS else f"acknowledged {ack_code or 'without MSA'}"
    participants = [
        m.ActiveParticipant(
            sender,
            True,
            [m.ROLE_SOURCE],
            network_id=peer,
            network_type=m.IP_ADDRESS if peer[:1].isdigit() else m.MACHINE_NAME,
        ),
        m.ActiveParticipant(receiver, False, [m.ROLE_DESTINATION], alternative_user_id=PROCESS_ID),
    ]
    actions = [("U" if event in ("A08", "A40") else "C", patients)]
    if event == "A40":
        actions.append(("D", merged))
    out = []
    for code, ids in actions:
        objects = _patients(ids)
        for o in objects:
            o.details.append(("MSH-10", control))
        out.append(
            m.AuditMessage(
                event_id=ITI_8.event_id,
                action=code,
                outcome=outcome,
                type_codes=[ITI_8.type_code],
                participants=participants,
                source=source,
                objects=objects,
                outcome_description=described,
            )
        )
    return out
