"""FHIR R4 AuditEvent (JSON) from a DICOM audit message, as IHE Basic Audit Log Patterns (BALP)
maps them (BALP §1.5.5 / FHIR R4 AuditEvent "DICOM and IHE mapping"): EventID -> type, EventTypeCode
-> subtype, EventActionCode -> action, EventDateTime -> recorded, outcome and its description,
PurposeOfUse -> purposeOfEvent, each ActiveParticipant -> agent, AuditSourceIdentification ->
source, each ParticipantObjectIdentification -> entity (ParticipantObjectQuery -> entity.query,
details -> entity.detail)."""

from __future__ import annotations

import base64
from typing import Any

from lxml import etree

DCM = "http://dicom.nema.org/resources/ontology/DCM"
IHE_EVENT_TYPE = "urn:ihe:event-type-code"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
NETWORK_TYPE = {"1": "1", "2": "2", "3": "3", "4": "4", "5": "5"}
SYSTEMS = {"DCM": DCM, "IHE Transactions": IHE_EVENT_TYPE, "2.16.840.1.113883.5.8": ACT_REASON}


def _coding(el: etree._Element | None) -> dict[str, str]:
    if el is None:
        return {}
    system = el.get("codeSystemName", "")
    out = {"system": SYSTEMS.get(system, f"urn:oid:{system}" if system[:1].isdigit() else system)}
    out["code"] = el.get("csd-code", "")
    if el.get("originalText"):
        out["display"] = el.get("originalText", "")
    return out


def audit_event(xml: str | bytes, event_id: str = "") -> dict[str, Any]:
    """The AuditEvent resource of one DICOM audit message."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    ev = root.find("EventIdentification")
    resource: dict[str, Any] = {"resourceType": "AuditEvent"}
    if event_id:
        resource["id"] = event_id
    resource["type"] = _coding(ev.find("EventID"))
    subtypes = [_coding(c) for c in ev.findall("EventTypeCode")]
    if subtypes:
        resource["subtype"] = subtypes
    if ev.get("EventActionCode"):
        resource["action"] = ev.get("EventActionCode")
    resource["recorded"] = ev.get("EventDateTime")
    resource["outcome"] = ev.get("EventOutcomeIndicator")
    if ev.findtext("EventOutcomeDescription"):
        resource["outcomeDesc"] = ev.findtext("EventOutcomeDescription")
    purposes = [{"coding": [_coding(p)]} for p in ev.findall("PurposeOfUse")]
    if purposes:
        resource["purposeOfEvent"] = purposes
    resource["agent"] = [_agent(p) for p in root.findall("ActiveParticipant")]
    src = root.find("AuditSourceIdentification")
    source: dict[str, Any] = {"observer": {"display": src.get("AuditSourceID")}}
    if src.get("AuditEnterpriseSiteID"):
        source["site"] = src.get("AuditEnterpriseSiteID")
    types = [t.get("csd-code") for t in src.findall("AuditSourceTypeCode")]
    if types:
        source["type"] = [{"system": SOURCE_TYPE, "code": t} for t in types]
    resource["source"] = source
    entities = [_entity(o) for o in root.findall("ParticipantObjectIdentification")]
    if entities:
        resource["entity"] = entities
    return resource


def _agent(p: etree._Element) -> dict[str, Any]:
    agent: dict[str, Any] = {}
    roles = [_coding(r) for r in p.findall("RoleIDCode")]
    dcm_roles = [r for r in roles if r.get("system") == DCM]
    if dcm_roles:
        agent["type"] = {"coding": dcm_roles}
    others = [r for r in roles if r.get("system") != DCM]
    if others:
        agent["role"] = [{"coding": [r]} for r in others]
    agent["who"] = {"identifier": {"value": p.get("UserID")}}
    if p.get("AlternativeUserID"):
        agent["altId"] = p.get("AlternativeUserID")
    if p.get("UserName"):
        agent["name"] = p.get("UserName")
    agent["requestor"] = p.get("UserIsRequestor") == "true"
    if p.get("NetworkAccessPointID"):
        agent["network"] = {
            "address": p.get("NetworkAccessPointID"),
            "type": NETWORK_TYPE.get(p.get("NetworkAccessPointTypeCode", ""), "1"),
        }
    return agent


def _entity(o: etree._Element) -> dict[str, Any]:
    entity: dict[str, Any] = {"what": {"identifier": {"value": o.get("ParticipantObjectID")}}}
    id_type = _coding(o.find("ParticipantObjectIDTypeCode"))
    if id_type:
        entity["what"]["identifier"]["type"] = {"coding": [id_type]}
    if o.get("ParticipantObjectTypeCode"):
        entity["type"] = {"system": ENTITY_TYPE, "code": o.get("ParticipantObjectTypeCode")}
    if o.get("ParticipantObjectTypeCodeRole"):
        entity["role"] = {"system": OBJECT_ROLE, "code": o.get("ParticipantObjectTypeCodeRole")}
    if o.findtext("ParticipantObjectName"):
        entity["name"] = o.findtext("ParticipantObjectName")
    if o.findtext("ParticipantObjectQuery"):
        entity["query"] = o.findtext("ParticipantObjectQuery")
    details = [
        {
            "type": d.get("type"),
            "valueString": base64.b64decode(d.get("value", "")).decode("utf-8", "replace"),
        }
        for d in o.findall("ParticipantObjectDetail")
    ]
    if details:
        entity["detail"] = details
    return entity


def bundle(messages: list[tuple[str, str]]) -> dict[str, Any]:
    """A FHIR collection Bundle of AuditEvents from (event id, DICOM XML) pairs."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{eid}", "resource": audit_event(xml, eid)} for eid, xml in messages],
    }
