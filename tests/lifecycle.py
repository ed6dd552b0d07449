"""Helpers of the metadata lifecycle suites (versions, ITI-57, ITI-62, ITI-92): requests over real
HTTP, answers validated against the official ebRS schemas, and small readers of what came back."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
from lxml import etree

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.model import Association, RegistryObject, RegistryPackage, Slot, Submission
from xds.metadata.registry_response import parse_registry_response
from xds.soap.envelope import build_request

_RIM = "{" + v.NS_RIM + "}"
_schemas: dict[str, etree.XMLSchema] = {}


def schema(standards: Path, name: str) -> etree.XMLSchema:
    if name not in _schemas:
        _schemas[name] = etree.XMLSchema(etree.parse(str(standards / "iti/schema/ebRS" / name)))
    return _schemas[name]


def post(url: str, action: str, body: bytes) -> etree._Element:
    """Send ``body`` as SOAP 1.2 with ``action``; the answer's body payload."""
    data, ctype = build_request(action, body, to=url)
    response = httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    env = safexml.parse(response.content)
    body_el = env.find(f"{{{v.NS_SOAP12}}}Body")
    assert body_el is not None
    return body_el[0]


def submit(url: str, action: str, sub: Submission, standards: Path) -> tuple[str, list[XdsError]]:
    """An lcm:SubmitObjectsRequest sent with ``action``; the RegistryResponse status and errors."""
    answer = post(url, action, ebrim.submit_objects_request_bytes(sub))
    schema(standards, "rs.xsd").assertValid(answer)
    return parse_registry_response(answer)


def remove(url: str, ids: list[str], standards: Path) -> tuple[str, list[XdsError]]:
    """ITI-62: an lcm:RemoveObjectsRequest naming ``ids``."""
    refs = "".join(f'<rim:ObjectRef id="{i}"/>' for i in ids)
    body = (
        f'<lcm:RemoveObjectsRequest xmlns:lcm="{v.NS_LCM}" xmlns:rim="{v.NS_RIM}">'
        f"<rim:ObjectRefList>{refs}</rim:ObjectRefList></lcm:RemoveObjectsRequest>"
    ).encode()
    answer = post(url, v.ACTION_DELETE_DOCUMENT_SET, body)
    schema(standards, "rs.xsd").assertValid(answer)
    return parse_registry_response(answer)


def query(
    url: str,
    query_id: str,
    slots: dict[str, list[str]],
    standards: Path,
    return_type: str = "LeafClass",
    action: str = v.ACTION_STORED_QUERY,
) -> etree._Element:
    values = "".join(
        f'<rim:Slot name="{name}"><rim:ValueList>'
        + "".join(f"<rim:Value>{x.replace('&', '&amp;')}</rim:Value>" for x in texts)
        + "</rim:ValueList></rim:Slot>"
        for name, texts in slots.items()
    )
    body = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="{return_type}" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{query_id}">{values}</rim:AdhocQuery></query:AdhocQueryRequest>'
    ).encode()
    answer = post(url, action, body)
    schema(standards, "query.xsd").assertValid(answer)
    return answer


def objects(answer: etree._Element, tag: str) -> dict[str, etree._Element]:
    """The answer's objects of one rim tag (ExtrinsicObject, RegistryPackage, Association) by id."""
    return {el.get("id", ""): el for el in answer.iter(_RIM + tag)}


def version(el: etree._Element) -> str | None:
    info = el.find(_RIM + "VersionInfo")
    return None if info is None else info.get("versionName")


def q(*values: str) -> str:
    """A stored-query list value: ('a', 'b')."""
    return "(" + ", ".join("'" + x.replace("'", "''") + "'" for x in values) + ")"


def new_version(stored: RegistryObject, previous: str, ss: RegistryPackage, *, propagate: bool | None = None):  # type: ignore[no-untyped-def]
    """An ITI-57 submission of a new version of ``stored`` (a copy with a fresh symbolic id and
    the same lid), and the submission set's HasMember with its PreviousVersion slot."""
    obj = copy.deepcopy(stored)
    obj.id = "NewVersion"
    obj.status = None
    obj.version_name = None
    for c in obj.classifications:
        c.id, c.classified_object = "", obj.id
    for e in obj.external_ids:
        e.id, e.registry_object = "", obj.id
    member = Association(
        id="ss-new-version", association_type=v.HAS_MEMBER, source_object=ss.id, target_object=obj.id
    )
    member.slots = [Slot("SubmissionSetStatus", ["Original"]), Slot("PreviousVersion", [previous])]
    if propagate is not None:
        member.slots.append(Slot("AssociationPropagation", ["yes" if propagate else "no"]))
    return obj, member


def update_set(patient: str) -> RegistryPackage:
    """A fresh submission set for ``patient`` (ITI-57 and ITI-92 carry one like ITI-42)."""
    import random

    return samples.submission_set("SubmissionSet01", patient, random.Random())


def status_update(ss: RegistryPackage, target: str, original: str, new: str, n: int = 0) -> Association:
    """An UpdateAvailabilityStatus association (ITI TF-2b §3.57.4.1.3.3.3)."""
    a = Association(
        id=f"status-update-{n}",
        association_type=v.UPDATE_AVAILABILITY_STATUS,
        source_object=ss.id,
        target_object=target,
    )
    a.slots = [Slot("OriginalStatus", [original]), Slot("NewStatus", [new])]
    return a
