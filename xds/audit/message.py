"""The DICOM audit message (DICOM PS3.15 Annex A.5.1, RFC 3881 as extended by DICOM and IHE).

An :class:`AuditMessage` holds EventIdentification, the ActiveParticipants, the
AuditSourceIdentification and the ParticipantObjectIdentifications; :meth:`AuditMessage.xml`
writes it as the schema in ``schema/dicom-audit-message.rnc`` orders it. ParticipantObjectDetail
values and ParticipantObjectQuery are base64 as the schema requires.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
import uuid
from dataclasses import dataclass, field

from lxml import etree

SCHEMA_FILE = "schema/dicom-audit-message.rnc"

# EventOutcomeIndicator (PS3.15 A.5.1)
SUCCESS = "0"
MINOR_FAILURE = "4"
SERIOUS_FAILURE = "8"
MAJOR_FAILURE = "12"


@dataclass(frozen=True)
class Code:
    """A coded value (CodedValueType: csd-code, codeSystemName, originalText)."""

    code: str
    system: str
    text: str


# ActiveParticipant roles (DCM)
ROLE_SOURCE = Code("110153", "DCM", "Source Role ID")
ROLE_DESTINATION = Code("110152", "DCM", "Destination Role ID")
ROLE_APPLICATION = Code("110150", "DCM", "Application")
ROLE_LAUNCHER = Code("110151", "DCM", "Application Launcher")
# ParticipantObjectIDTypeCode values
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
REPORT_NUMBER = Code("9", "RFC-3881", "Report Number")
SUBMISSION_SET = Code(
    "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", "IHE XDS Metadata", "submission set classificationNode"
)
# ParticipantObjectTypeCode / ...TypeCodeRole
PERSON, SYSTEM_OBJECT = "1", "2"
ROLE_PATIENT, ROLE_REPORT, ROLE_JOB, ROLE_QUERY = "1", "3", "20", "24"
# NetworkAccessPointTypeCode
MACHINE_NAME, IP_ADDRESS, URI = "1", "2", "5"


@dataclass
class ActiveParticipant:
    user_id: str
    requestor: bool
    roles: list[Code] = field(default_factory=list)
    alternative_user_id: str = ""
    user_name: str = ""
    network_id: str = ""
    network_type: str = ""


@dataclass
class ParticipantObject:
    object_id: str
    id_type: Code
    type_code: str
    role: str
    name: str = ""
    query: bytes = b""
    details: list[tuple[str, str]] = field(default_factory=list)
    sensitivity: str = ""


@dataclass
class AuditSource:
    source_id: str
    enterprise_site_id: str = ""
    type_code: str = "4"  # application server process (PS3.15 A.5.1.2.1)


@dataclass
class AuditMessage:
    """One audited event. ``event_uuid`` names it for the sinks (delivered once each)."""

    event_id: Code
    action: str
    outcome: str
    type_codes: list[Code] = field(default_factory=list)
    participants: list[ActiveParticipant] = field(default_factory=list)
    source: AuditSource = field(default_factory=lambda: AuditSource("xds"))
    objects: list[ParticipantObject] = field(default_factory=list)
    when: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    outcome_description: str = ""
    purpose_of_use: list[Code] = field(default_factory=list)
    event_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    # --- reading --------------------------------------------------------------------------------
    def patients(self) -> list[str]:
        return [o.object_id for o in self.objects if o.role == ROLE_PATIENT and o.type_code == PERSON]

    def documents(self) -> list[str]:
        return [o.object_id for o in self.objects if o.role == ROLE_REPORT]

    def requestors(self) -> list[ActiveParticipant]:
        """The human requestors (requestor participants that are not the source system)."""
        return [p for p in self.participants if p.requestor and ROLE_SOURCE not in p.roles]

    # --- the spool's form ------------------------------------------------------------------------
    def to_wire(self) -> list[object]:
        """The message as plain JSON values (what the request path spools; :meth:`from_wire` gives
        it back whole, so the XML written later is the XML of this message, byte for byte)."""
        return [
            self.event_uuid,
            self.when.isoformat(),
            _wire(self.event_id),
            self.action,
            self.outcome,
            [_wire(c) for c in self.type_codes],
            [
                [
                    p.user_id,
                    p.requestor,
                    [_wire(c) for c in p.roles],
                    p.alternative_user_id,
                    p.user_name,
                    p.network_id,
                    p.network_type,
                ]
                for p in self.participants
            ],
            [self.source.source_id, self.source.enterprise_site_id, self.source.type_code],
            [object_wire(o) for o in self.objects],
            self.outcome_description,
            [_wire(c) for c in self.purpose_of_use],
        ]

    @classmethod
    def from_wire(cls, w: list) -> AuditMessage:  # type: ignore[type-arg]
        uid, when, event_id, action, outcome, types, parts, src, objects, description, purpose = w
        return cls(
            event_id=Code(*event_id),
            action=action,
            outcome=outcome,
            type_codes=[Code(*c) for c in types],
            participants=[
                ActiveParticipant(u, r, [Code(*c) for c in roles], alt, name, net, net_type)
                for u, r, roles, alt, name, net, net_type in parts
            ],
            source=AuditSource(*src),
            objects=[object_from_wire(o) for o in objects],
            when=dt.datetime.fromisoformat(when),
            outcome_description=description,
            purpose_of_use=[Code(*c) for c in purpose],
            event_uuid=uid,
        )

    # --- writing --------------------------------------------------------------------------------
    def element(self) -> etree._Element:
        root = etree.Element("AuditMessage")
        ev = etree.SubElement(
            root,
            "EventIdentification",
            EventActionCode=self.action,
            EventDateTime=self.when.astimezone(dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            EventOutcomeIndicator=self.outcome,
        )
        _code(ev, "EventID", self.event_id)
        for code in self.type_codes:
            _code(ev, "EventTypeCode", code)
        if self.outcome_description:
            etree.SubElement(ev, "EventOutcomeDescription").text = _clean(self.outcome_description)
        for code in self.purpose_of_use:
            _code(ev, "PurposeOfUse", code)
        for p in self.participants:
            _participant(root, p)
        src = etree.SubElement(root, "AuditSourceIdentification", AuditSourceID=_token(self.source.source_id))
        if self.source.enterprise_site_id:
            src.set("AuditEnterpriseSiteID", _token(self.source.enterprise_site_id))
        if self.source.type_code:
            etree.SubElement(src, "AuditSourceTypeCode").set("csd-code", self.source.type_code)
        for o in self.objects:
            _object(root, o)
        return root

    def xml(self) -> bytes:
        """The message as :meth:`element` serialises it, written directly as text (the same bytes
        as ``etree.tostring(self.element(), encoding="utf-8")``, at a fraction of the cost)."""
        return self.text().encode("utf-8")

    def text(self) -> str:
        when = self.when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out = [
            f'<AuditMessage><EventIdentification EventActionCode="{_attr(self.action)}" '
            f'EventDateTime="{when}" EventOutcomeIndicator="{_attr(self.outcome)}">',
            _code_text("EventID", self.event_id),
        ]
        out += [_code_text("EventTypeCode", code) for code in self.type_codes]
        if self.outcome_description:
            out.append(
                f"<EventOutcomeDescription>{_text(_clean(self.outcome_description))}</EventOutcomeDescription>"
            )
        out += [_code_text("PurposeOfUse", code) for code in self.purpose_of_use]
        out.append("</EventIdentification>")
        out += [_participant_text(p) for p in self.participants]
        src = self.source
        out.append(f'<AuditSourceIdentification AuditSourceID="{_attr(_token(src.source_id))}"')
        if src.enterprise_site_id:
            out.append(f' AuditEnterpriseSiteID="{_attr(_token(src.enterprise_site_id))}"')
        if src.type_code:
            out.append(
                f'><AuditSourceTypeCode csd-code="{_attr(src.type_code)}"/></AuditSourceIdentification>'
            )
        else:
            out.append("/>")
        out += [_object_text(o) for o in self.objects]
        out.append("</AuditMessage>")
        return "".join(out)


_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def _attr(value: str) -> str:
    """An attribute value escaped as lxml writes it."""
    return value.translate(_ATTR_ESCAPES)


def _text(value: str) -> str:
    return value.translate(_TEXT_ESCAPES)


@functools.lru_cache(maxsize=1024)
def _code_text(tag: str, code: Code) -> str:
    a = _code_attributes(code)
    return (
        f'<{tag} csd-code="{_attr(a["csd-code"])}" codeSystemName="{_attr(a["codeSystemName"])}" '
        f'originalText="{_attr(a["originalText"])}"/>'
    )


def _participant_text(p: ActiveParticipant) -> str:
    attrs = [f' UserID="{_attr(_clean(p.user_id))}"']
    if p.alternative_user_id:
        attrs.append(f' AlternativeUserID="{_attr(_clean(p.alternative_user_id))}"')
    if p.user_name:
        attrs.append(f' UserName="{_attr(_clean(p.user_name))}"')
    attrs.append(' UserIsRequestor="true"' if p.requestor else ' UserIsRequestor="false"')
    if p.network_id:
        attrs.append(
            f' NetworkAccessPointID="{_attr(_token(p.network_id))}"'
            f' NetworkAccessPointTypeCode="{_attr(p.network_type or IP_ADDRESS)}"'
        )
    head = "<ActiveParticipant" + "".join(attrs)
    if not p.roles:
        return head + "/>"
    return head + ">" + "".join(_code_text("RoleIDCode", c) for c in p.roles) + "</ActiveParticipant>"


def _object_text(o: ParticipantObject) -> str:
    head = (
        f'<ParticipantObjectIdentification ParticipantObjectID="{_attr(_token(o.object_id) or "-")}"'
        f' ParticipantObjectTypeCode="{_attr(o.type_code)}" ParticipantObjectTypeCodeRole="{_attr(o.role)}"'
    )
    if o.sensitivity:
        head += f' ParticipantObjectSensitivity="{_attr(_token(o.sensitivity))}"'
    out = [head, ">", _code_text("ParticipantObjectIDTypeCode", o.id_type)]
    if o.query:
        out.append(
            f"<ParticipantObjectQuery>{base64.b64encode(o.query).decode('ascii')}</ParticipantObjectQuery>"
        )
    elif o.name:
        out.append(f"<ParticipantObjectName>{_text(_token(o.name))}</ParticipantObjectName>")
    for kind, value in o.details:
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        out.append(f'<ParticipantObjectDetail type="{_attr(_token(kind))}" value="{encoded}"/>')
    out.append("</ParticipantObjectIdentification>")
    return "".join(out)


def object_wire(o: ParticipantObject) -> list[object]:
    """A ParticipantObjectIdentification as plain JSON values (:func:`object_from_wire` reads it)."""
    query = o.query.decode("utf-8", "surrogateescape")
    return [o.object_id, _wire(o.id_type), o.type_code, o.role, o.name, query, o.details, o.sensitivity]


def object_from_wire(w: list) -> ParticipantObject:  # type: ignore[type-arg]
    oid, idt, tc, role, name, query, details, sens = w
    return ParticipantObject(
        oid,
        Code(*idt),
        tc,
        role,
        name,
        query.encode("utf-8", "surrogateescape"),
        [(k, v) for k, v in details],
        sens,
    )


def _wire(code: Code) -> list[str]:
    return [code.code, code.system, code.text]


def _code(parent: etree._Element, tag: str, code: Code) -> None:
    etree.SubElement(parent, tag, _code_attributes(code))


@functools.lru_cache(maxsize=1024)
def _code_attributes(code: Code) -> dict[str, str]:
    return {
        "csd-code": _token(code.code),
        "codeSystemName": _token(code.system),
        "originalText": _token(code.text),
    }


def _participant(root: etree._Element, p: ActiveParticipant) -> None:
    el = etree.SubElement(root, "ActiveParticipant")
    for code in p.roles:
        _code(el, "RoleIDCode", code)
    el.set("UserID", _clean(p.user_id))
    if p.alternative_user_id:
        el.set("AlternativeUserID", _clean(p.alternative_user_id))
    if p.user_name:
        el.set("UserName", _clean(p.user_name))
    el.set("UserIsRequestor", "true" if p.requestor else "false")
    if p.network_id:
        el.set("NetworkAccessPointID", _token(p.network_id))
        el.set("NetworkAccessPointTypeCode", p.network_type or IP_ADDRESS)


def _object(root: etree._Element, o: ParticipantObject) -> None:
    el = etree.SubElement(root, "ParticipantObjectIdentification")
    _code(el, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query:
        etree.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(o.query).decode("ascii")
    elif o.name:
        etree.SubElement(el, "ParticipantObjectName").text = _token(o.name)
    for kind, value in o.details:
        det = etree.SubElement(el, "ParticipantObjectDetail", type=_token(kind))
        det.set("value", base64.b64encode(value.encode("utf-8")).decode("ascii"))
    el.set("ParticipantObjectID", _token(o.object_id) or "-")
    el.set("ParticipantObjectTypeCode", o.type_code)
    el.set("ParticipantObjectTypeCodeRole", o.role)
    if o.sensitivity:
        el.set("ParticipantObjectSensitivity", _token(o.sensitivity))


_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    """Text XML 1.0 can carry (control characters and the like from hostile input are dropped)."""
    text = text[:4096]
    return _NOT_XML.sub("", text) if _NOT_XML.search(text) else text


@functools.lru_cache(maxsize=8192)
def _token(text: str) -> str:
    """An xsd:token: no leading, trailing or repeated whitespace."""
    text = _clean(text)
    return (
        text
        if " " not in text and text.strip() == text and "\t" not in text and "\n" not in text
        else " ".join(text.split())
    )
