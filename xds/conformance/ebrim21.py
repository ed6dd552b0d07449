"""ebRIM 2.1 ``rs:SubmitObjectsRequest`` to ebRIM 3.0 ``lcm:SubmitObjectsRequest``.

Most submissions in the NIST test kit are written in ebRIM 2.1 (XDS.a); the toolkit converts them
before sending them to an XDS.b actor, and so must a replayer. The differences, read off the kit's
2.1 and 3.0 messages and the ebRIM 3.0 schema (rim.xsd, lcm.xsd):

- namespaces: rs 2.1 → lcm 3.0 for the request, rim 2.1 → rim 3.0 for everything inside it;
- ``LeafRegistryObjectList`` → ``RegistryObjectList``;
- ``ObjectRef`` elements are dropped: they only announce the well-known classification schemes or
  objects already in the registry, and no 3.0 submission in the kit carries them;
- every 3.0 object needs an ``id``: a ``Classification``, ``ExternalIdentifier`` or ``Association``
  without one gets a fresh ``urn:uuid:``;
- a nested ``Classification`` / ``ExternalIdentifier`` without ``classifiedObject`` /
  ``registryObject`` takes its parent's id;
- short association types (``HasMember``, ``RPLC``, ``XFRM``, ``APND``, ``XFRM_RPLC``, ``signs``)
  become their 3.0 URNs; full URNs stay as they are;
- children are reordered into the 3.0 sequence: Slot*, Name?, Description?, VersionInfo?,
  Classification*, ExternalIdentifier*, then type-specific children (2.1 puts Name first);
- ``Classification``, ``ExternalIdentifier``, ``Association`` and ``RegistryPackage`` get the
  canonical ``objectType`` when they have none, as the toolkit's own 3.0 conversions carry it.

A few test-data messages (testdata-registry/MPQ_*) put un-namespaced ``Slot`` elements among the rim
2.1 ones; the toolkit reads metadata by local name and sends them, so un-namespaced elements inside a
2.1 request are read as rim 2.1 too.

Everything else (attributes such as ``mimeType``/``objectType``/``status``/``lid``, Slot/ValueList/
Value, Name/Description with LocalizedString ``value``/``charset``/``xml:lang``, a Classification with
``classificationNode`` instead of a scheme) maps unchanged.
"""

from __future__ import annotations

import uuid

from lxml import etree

from xds.metadata import vocabulary as v

_R21 = "{" + v.NS_RIM21 + "}"
_RS21 = "{" + v.NS_RS21 + "}"
_R3 = "{" + v.NS_RIM + "}"
_LCM = "{" + v.NS_LCM + "}"

_OBJECT_TYPES = {
    "Classification": v.OT_CLASSIFICATION,
    "ExternalIdentifier": v.OT_EXTERNAL_IDENTIFIER,
    "Association": v.OT_ASSOCIATION,
    "RegistryPackage": v.OT_REGISTRY_PACKAGE,
}
# where a nested object takes its parent's id from, when it does not name it itself
_PARENT_REFERENCE = {"Classification": "classifiedObject", "ExternalIdentifier": "registryObject"}
# child elements that are registry objects in their own right (converted with an id) ...
_NESTED_OBJECTS = frozenset(_PARENT_REFERENCE)
# ... and the 3.0 RegistryObjectType sequence every object's leading children must follow
_SEQUENCE = ("Slot", "Name", "Description", "VersionInfo", "Classification", "ExternalIdentifier")


class ConversionError(ValueError):
    """The element is ebRIM 2.1 but not a SubmitObjectsRequest this converter understands."""


def is_ebrim21(root: etree._Element) -> bool:
    """True when ``root`` is an ebRIM 2.1 (rs or rim 2.1 namespace) element."""
    return etree.QName(root).namespace in (v.NS_RS21, v.NS_RIM21)


def convert_submit_objects_request(root: etree._Element) -> etree._Element:
    """Convert an ebRIM 2.1 ``rs:SubmitObjectsRequest`` to a new ebRIM 3.0 one.

    An element that is not ebRIM 2.1 is returned unchanged (the same object); the input is never
    modified.
    """
    if not is_ebrim21(root):
        return root
    if root.tag != _RS21 + "SubmitObjectsRequest":
        raise ConversionError(f"not an ebRIM 2.1 SubmitObjectsRequest: {root.tag}")
    request = etree.Element(_LCM + "SubmitObjectsRequest", nsmap={"lcm": v.NS_LCM, "rim": v.NS_RIM})
    for name in ("id", "comment"):  # the RegistryRequestType attributes; xsi hints name 2.1 schemas
        if root.get(name) is not None:
            request.set(name, root.get(name))
    objects = etree.SubElement(request, _R3 + "RegistryObjectList")
    for leaf_list in root:
        if not isinstance(leaf_list.tag, str):
            continue
        if leaf_list.tag != _R21 + "LeafRegistryObjectList":
            raise ConversionError(f"unexpected child of SubmitObjectsRequest: {leaf_list.tag}")
        for child in _elements(leaf_list):
            if etree.QName(child).localname == "ObjectRef":
                continue
            objects.append(_convert_object(child, parent_id=None))
    return request


def _elements(parent: etree._Element) -> list[etree._Element]:
    """Element children only (no comments or processing instructions)."""
    return [child for child in parent if isinstance(child.tag, str)]


def _localname(element: etree._Element) -> str:
    qname = etree.QName(element)
    if qname.namespace not in (v.NS_RIM21, None):
        raise ConversionError(f"unexpected element in an ebRIM 2.1 submission: {element.tag}")
    return qname.localname


def _convert_object(element: etree._Element, parent_id: str | None) -> etree._Element:
    """One registry object (ExtrinsicObject, RegistryPackage, Association, Classification ...)."""
    name = _localname(element)
    converted = etree.Element(_R3 + name)
    for attribute, value in element.attrib.items():
        if attribute == "associationType":
            value = v.ASSOCIATION_TYPES_21.get(value, value)
        converted.set(attribute, value)
    if not converted.get("id"):
        converted.set("id", f"urn:uuid:{uuid.uuid4()}")
    reference = _PARENT_REFERENCE.get(name)
    if reference and not converted.get(reference):
        if parent_id is None:
            raise ConversionError(f"{name} {converted.get('id')} names no {reference} and has no parent")
        converted.set(reference, parent_id)
    if name in _OBJECT_TYPES and not converted.get("objectType"):
        converted.set("objectType", _OBJECT_TYPES[name])

    own_id = converted.get("id")
    ordered: dict[str, list[etree._Element]] = {key: [] for key in _SEQUENCE}
    rest: list[etree._Element] = []
    for child in _elements(element):
        child_name = _localname(child)
        if child_name in _NESTED_OBJECTS:
            new_child = _convert_object(child, parent_id=own_id)
        else:
            new_child = _convert_plain(child)
        ordered.get(child_name, rest).append(new_child)
    for key in _SEQUENCE:
        converted.extend(ordered[key])
    converted.extend(rest)
    return converted


def _convert_plain(element: etree._Element) -> etree._Element:
    """A structural element (Slot, ValueList, Value, Name, LocalizedString ...): namespace only."""
    converted = etree.Element(_R3 + _localname(element), attrib=dict(element.attrib))
    children = _elements(element)
    if children:
        converted.extend(_convert_plain(child) for child in children)
    elif element.text is not None and element.text.strip():
        converted.text = element.text
    return converted
