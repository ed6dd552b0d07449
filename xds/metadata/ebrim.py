"""The ebRIM 3.0 codec: XML elements to the object model and back (OASIS ebRIM 3.0, ITI TF-3 §4.2).

Parsing keeps every slot, localized string, classification and identifier a submitter sent; the
serialiser writes children in the order the rim.xsd sequence requires (Slot*, Name?, Description?,
VersionInfo?, Classification*, ExternalIdentifier*), so a round trip loses nothing and validates.
"""

from __future__ import annotations

import re

from lxml import etree

from xds import safexml
from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsException
from xds.metadata.model import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    LocalizedString,
    ObjectRef,
    RegistryObject,
    RegistryPackage,
    Slot,
    Submission,
)

_R = "{" + v.NS_RIM + "}"
_LCM = "{" + v.NS_LCM + "}"
_XML_LANG = "{" + v.NS_XML + "}lang"

T_SLOT = _R + "Slot"
T_VALUE_LIST = _R + "ValueList"
T_VALUE = _R + "Value"
T_NAME = _R + "Name"
T_DESCRIPTION = _R + "Description"
T_LOCALIZED = _R + "LocalizedString"
T_VERSION_INFO = _R + "VersionInfo"
T_CLASSIFICATION = _R + "Classification"
T_EXTERNAL_ID = _R + "ExternalIdentifier"
T_EXTRINSIC = _R + "ExtrinsicObject"
T_PACKAGE = _R + "RegistryPackage"
T_ASSOCIATION = _R + "Association"
T_OBJECT_REF = _R + "ObjectRef"
T_OBJECT_LIST = _R + "RegistryObjectList"
T_REQUEST_SLOT_LIST = _R + "RequestSlotList"
T_SUBMIT = _LCM + "SubmitObjectsRequest"


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
def _strings(el: etree._Element) -> list[LocalizedString]:
    return [
        LocalizedString(ls.get("value", ""), ls.get(_XML_LANG), ls.get("charset"))
        for ls in el
        if ls.tag == T_LOCALIZED
    ]


def _slot(el: etree._Element) -> Slot:
    values: list[str] = []
    for vl in el:
        if vl.tag == T_VALUE_LIST:
            values.extend((val.text or "") for val in vl if val.tag == T_VALUE)
    return Slot(el.get("name", ""), values, el.get("slotType"))


def _fill_common(obj: RegistryObject, el: etree._Element) -> None:
    obj.lid = el.get("lid")
    obj.home = el.get("home")
    obj.status = el.get("status")
    obj.object_type = el.get("objectType")
    for child in el:
        tag = child.tag
        if tag == T_SLOT:
            obj.slots.append(_slot(child))
        elif tag == T_NAME:
            obj.name = _strings(child)
        elif tag == T_DESCRIPTION:
            obj.description = _strings(child)
        elif tag == T_VERSION_INFO:
            obj.version_name = child.get("versionName")
        elif tag == T_CLASSIFICATION:
            c = parse_classification(child)
            if not c.classified_object:
                c.classified_object = obj.id
            obj.classifications.append(c)
        elif tag == T_EXTERNAL_ID:
            e = parse_external_identifier(child)
            if not e.registry_object:
                e.registry_object = obj.id
            obj.external_ids.append(e)


def parse_classification(el: etree._Element) -> Classification:
    c = Classification(
        id=el.get("id", ""),
        classified_object=el.get("classifiedObject", ""),
        classification_scheme=el.get("classificationScheme"),
        classification_node=el.get("classificationNode"),
        node_representation=el.get("nodeRepresentation"),
    )
    _fill_common(c, el)
    return c


def parse_external_identifier(el: etree._Element) -> ExternalIdentifier:
    e = ExternalIdentifier(
        id=el.get("id", ""),
        registry_object=el.get("registryObject", ""),
        identification_scheme=el.get("identificationScheme", ""),
        value=el.get("value", ""),
    )
    _fill_common(e, el)
    return e


def parse_object(el: etree._Element) -> RegistryObject | ObjectRef | None:
    """One top-level child of a RegistryObjectList; None for elements XDS does not use."""
    tag = el.tag
    obj: RegistryObject
    if tag == T_EXTRINSIC:
        opaque = el.get("isOpaque")
        obj = DocumentEntry(
            id=el.get("id", ""),
            mime_type=el.get("mimeType", ""),
            is_opaque=None if opaque is None else opaque == "true",
        )
    elif tag == T_PACKAGE:
        obj = RegistryPackage(id=el.get("id", ""))
    elif tag == T_ASSOCIATION:
        obj = Association(
            id=el.get("id", ""),
            association_type=el.get("associationType", ""),
            source_object=el.get("sourceObject", ""),
            target_object=el.get("targetObject", ""),
        )
    elif tag == T_CLASSIFICATION:
        return parse_classification(el)
    elif tag == T_EXTERNAL_ID:
        return parse_external_identifier(el)
    elif tag == T_OBJECT_REF:
        return ObjectRef(el.get("id", ""), el.get("home"))
    else:
        return None
    _fill_common(obj, el)
    return obj


def parse_registry_object_list(container: etree._Element) -> Submission:
    """All objects of a rim:RegistryObjectList (or an element that holds its children)."""
    sub = Submission()
    loose: list[Classification] = []
    for child in container:
        if not isinstance(child.tag, str):
            continue
        parsed = parse_object(child)
        if parsed is None:
            continue
        if isinstance(parsed, ObjectRef):
            sub.object_refs.append(parsed)
        elif isinstance(parsed, Classification):
            loose.append(parsed)
        else:
            sub.objects.append(parsed)
    if loose:
        # A package becomes a SubmissionSet or Folder through a classification that may stand
        # beside it rather than inside it (ITI TF-3 §4.2.1.2); attach such classifications to
        # the object they classify so every object carries its whole description.
        index = {o.id: o for o in sub.objects}
        for c in loose:
            target = index.get(c.classified_object)
            if target is not None:
                target.classifications.append(c)
            else:
                sub.objects.append(c)
    return sub


def parse_submit_objects_request(root: etree._Element) -> Submission:
    """An lcm:SubmitObjectsRequest (ITI-42 / ITI-41 metadata) as a :class:`Submission`."""
    if root.tag != T_SUBMIT:
        raise XdsException.of(
            v.XDSRegistryMetadataError,
            f"expected lcm:SubmitObjectsRequest, found {etree.QName(root).localname}",
        )
    object_list = None
    request_slots: list[Slot] = []
    for child in root:
        if child.tag == T_OBJECT_LIST:
            object_list = child
        elif child.tag == T_REQUEST_SLOT_LIST:
            request_slots = [_slot(s) for s in child if s.tag == T_SLOT]
    if object_list is None:
        raise XdsException.of(v.XDSRegistryMetadataError, "SubmitObjectsRequest has no RegistryObjectList")
    sub = parse_registry_object_list(object_list)
    sub.request_slots = request_slots
    return sub


# ------------------------------------------------------------------------------------------------
# serialising
#
# Written as text rather than built with lxml: a DocumentEntry has a couple of hundred elements, and
# building them one SubElement at a time costs more than parsing the whole message did. The text is
# produced by one function per ebRIM type; ``to_element`` parses it back for callers that want a tree.
# ------------------------------------------------------------------------------------------------
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_RIM_DECL = f' xmlns:rim="{v.NS_RIM}"'


_needs_attr_escape = re.compile(r'[&<>"\n\r\t]').search
_needs_text_escape = re.compile(r"[&<>\r]").search


def _a(value: str) -> str:
    return value.translate(_ATTR_ESCAPES) if _needs_attr_escape(value) else value


def _t(value: str) -> str:
    return value.translate(_TEXT_ESCAPES) if _needs_text_escape(value) else value


def _strings_xml(out: list[str], tag: str, strings: list[LocalizedString]) -> None:
    out.append(f"<rim:{tag}>")
    for s in strings:
        attrs = ""
        if s.charset:
            attrs += f' charset="{_a(s.charset)}"'
        if s.lang:
            attrs += f' xml:lang="{_a(s.lang)}"'
        out.append(f'<rim:LocalizedString{attrs} value="{_a(s.value)}"/>')
    out.append(f"</rim:{tag}>")


def _slot_xml(out: list[str], slot: Slot) -> None:
    st = f' slotType="{_a(slot.slot_type)}"' if slot.slot_type else ""
    out.append(f'<rim:Slot name="{_a(slot.name)}"{st}><rim:ValueList>')
    for value in slot.values:
        out.append(f"<rim:Value>{_t(value)}</rim:Value>")
    out.append("</rim:ValueList></rim:Slot>")


def _common_attrs(obj: RegistryObject) -> str:
    attrs = f' id="{_a(obj.id)}"'
    if obj.home:
        attrs += f' home="{_a(obj.home)}"'
    if obj.lid:
        attrs += f' lid="{_a(obj.lid)}"'
    if obj.object_type:
        attrs += f' objectType="{_a(obj.object_type)}"'
    if obj.status:
        attrs += f' status="{_a(obj.status)}"'
    return attrs


def _object_xml(out: list[str], obj: RegistryObject, decl: str) -> None:
    attrs = _common_attrs(obj)
    if isinstance(obj, DocumentEntry):
        tag = "ExtrinsicObject"
        attrs += f' mimeType="{_a(obj.mime_type)}"'
        if obj.is_opaque is not None:
            attrs += ' isOpaque="true"' if obj.is_opaque else ' isOpaque="false"'
    elif isinstance(obj, RegistryPackage):
        tag = "RegistryPackage"
    elif isinstance(obj, Association):
        tag = "Association"
        attrs += (
            f' associationType="{_a(obj.association_type)}"'
            f' sourceObject="{_a(obj.source_object)}" targetObject="{_a(obj.target_object)}"'
        )
    elif isinstance(obj, Classification):
        tag = "Classification"
        if obj.classification_scheme:
            attrs += f' classificationScheme="{_a(obj.classification_scheme)}"'
        attrs += f' classifiedObject="{_a(obj.classified_object)}"'
        if obj.classification_node:
            attrs += f' classificationNode="{_a(obj.classification_node)}"'
        if obj.node_representation is not None:
            attrs += f' nodeRepresentation="{_a(obj.node_representation)}"'
    elif isinstance(obj, ExternalIdentifier):
        tag = "ExternalIdentifier"
        attrs += (
            f' registryObject="{_a(obj.registry_object)}"'
            f' identificationScheme="{_a(obj.identification_scheme)}" value="{_a(obj.value)}"'
        )
    else:  # pragma: no cover - the model has no other kinds
        raise TypeError(f"cannot serialise {type(obj).__name__}")
    if not (
        obj.slots
        or obj.name
        or obj.description
        or obj.version_name
        or obj.classifications
        or obj.external_ids
    ):
        out.append(f"<rim:{tag}{decl}{attrs}/>")
        return
    out.append(f"<rim:{tag}{decl}{attrs}>")
    for slot in obj.slots:
        _slot_xml(out, slot)
    if obj.name:
        _strings_xml(out, "Name", obj.name)
    if obj.description:
        _strings_xml(out, "Description", obj.description)
    if obj.version_name:
        out.append(f'<rim:VersionInfo versionName="{_a(obj.version_name)}"/>')
    for c in obj.classifications:
        _object_xml(out, c, "")
    for e in obj.external_ids:
        _object_xml(out, e, "")
    out.append(f"</rim:{tag}>")


def object_xml(obj: RegistryObject, *, declare: bool = True) -> str:
    """``obj`` as rim 3.0 text; ``declare=False`` leaves the rim prefix to the enclosing element."""
    out: list[str] = []
    _object_xml(out, obj, _RIM_DECL if declare else "")
    return "".join(out)


def to_bytes(obj: RegistryObject) -> bytes:
    """The canonical fragment of ``obj``: what the registry stores and answers queries with."""
    return object_xml(obj).encode()


def to_element(obj: RegistryObject) -> etree._Element:
    """``obj`` as a rim 3.0 element."""
    return safexml.parse(to_bytes(obj))


def object_ref_xml(ref: ObjectRef, *, declare: bool = True) -> str:
    home = f' home="{_a(ref.home)}"' if ref.home else ""
    return f'<rim:ObjectRef{_RIM_DECL if declare else ""} id="{_a(ref.id)}"{home}/>'


def submit_objects_request_bytes(sub: Submission) -> bytes:
    """A whole lcm:SubmitObjectsRequest for ``sub`` (what a Document Source sends in ITI-42)."""
    out = [f'<lcm:SubmitObjectsRequest xmlns:lcm="{v.NS_LCM}"{_RIM_DECL}>']
    if sub.request_slots:
        out.append("<rim:RequestSlotList>")
        for slot in sub.request_slots:
            _slot_xml(out, slot)
        out.append("</rim:RequestSlotList>")
    out.append("<rim:RegistryObjectList>")
    for ref in sub.object_refs:
        out.append(object_ref_xml(ref, declare=False))
    for obj in sub.objects:
        _object_xml(out, obj, "")
    out.append("</rim:RegistryObjectList></lcm:SubmitObjectsRequest>")
    return "".join(out).encode()


def submit_objects_request(sub: Submission) -> etree._Element:
    """:func:`submit_objects_request_bytes` as an element."""
    return safexml.parse(submit_objects_request_bytes(sub))
