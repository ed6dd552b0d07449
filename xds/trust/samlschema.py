"""The OASIS SAML 2.0 assertion schema, held against every assertion a request carries.

SAML 2.0 Core §2 (``saml-schema-assertion-2.0.xsd``) fixes an assertion's structure; XUA
(ITI TF-2 §3.40.4.1.2) builds on it, so an X-Service Provider checks it before it believes the
assertion (§3.40.4.2). The schema, with the W3C XML-Signature and XML-Encryption schemas it
imports, ships unmodified in the data package ``xds.wsdl`` (``oasis-saml/``, see its ``NOTICE.md``).
Their imports name the W3C's addresses; a resolver answers those from the shipped copies and
nothing else, so compiling the schema never reaches the network or another file.
"""

from __future__ import annotations

import copy
import functools
import threading
from pathlib import Path

from lxml import etree

from xds.schemas import wsdl_dir

NS_XSD = "http://www.w3.org/2001/XMLSchema"
ASSERTION_XSD = "saml-schema-assertion-2.0.xsd"
# the W3C locations the shipped schemas import each other by, and the shipped file for each
_IMPORTS = {
    "http://www.w3.org/TR/2002/REC-xmldsig-core-20020212/xmldsig-core-schema.xsd": "xmldsig-core-schema.xsd",
    "http://www.w3.org/TR/2002/REC-xmlenc-core-20021210/xenc-schema.xsd": "xenc-schema.xsd",
}


def saml_dir() -> Path:
    """The folder of the shipped SAML 2.0, XML-Signature and XML-Encryption schemas."""
    return wsdl_dir() / "oasis-saml"


class _ShippedOnly(etree.Resolver):
    """Loads an imported schema from the shipped copy, a shipped file as itself, anything else
    (the XML Schema DTD the W3C files name) as an empty text."""

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        name = _IMPORTS.get(system_url)
        if name is not None:
            return self.resolve_filename(str(saml_dir() / name), context)
        path = Path(system_url.removeprefix("file://"))
        if path.parent == saml_dir() and path.name in {ASSERTION_XSD, *_IMPORTS.values()}:
            return self.resolve_filename(str(path), context)
        return self.resolve_string("", context)


@functools.cache
def assertion_schema() -> etree.XMLSchema:
    """The compiled SAML 2.0 assertion schema (compiled once per process)."""
    # the shipped W3C schemas carry an internal DTD subset (entities, #FIXED attributes): these are
    # this package's own files, not input, so they are read with a parser of their own
    parser = etree.XMLParser(no_network=True, resolve_entities=True, load_dtd=False)
    parser.resolvers.add(_ShippedOnly())
    return etree.XMLSchema(etree.parse(str(saml_dir() / ASSERTION_XSD), parser))


_VALUE = "{urn:oasis:names:tc:SAML:2.0:assertion}AttributeValue"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def _values_set_aside(assertion: etree._Element) -> etree._Element:
    """``assertion``, or a copy whose AttributeValue contents are left out when any has element content.

    AttributeValue is ``xs:anyType`` (SAML 2.0 Core §2.7.3.1.1): what it holds is the attribute's own
    vocabulary, such as the HL7 CE of a role or purpose of use with ``xsi:type="CE"`` (ITI TF-2
    §3.40.4.1.2), whose type this schema cannot know. Those values are judged by the attribute
    rules; the schema judges everything around them.
    """
    if not any(len(value) or _foreign_type(value) for value in assertion.iter(_VALUE)):
        return assertion
    aside = copy.deepcopy(assertion)
    for value in aside.iter(_VALUE):
        for child in list(value):
            value.remove(child)
        if _foreign_type(value):
            del value.attrib[_XSI_TYPE]
    return aside


def _foreign_type(value: etree._Element) -> bool:
    """Whether an xsi:type names a type outside XML Schema's built-in ones (``xs:string`` is not)."""
    declared = value.get(_XSI_TYPE)
    if declared is None:
        return False
    prefix = declared.partition(":")[0] if ":" in declared else None
    return value.nsmap.get(prefix) != NS_XSD


# libxml2 keeps a validation's errors on the schema object: one validation at a time per schema
_lock = threading.Lock()


def schema_problem(assertion: etree._Element) -> str | None:
    """None when ``assertion`` is valid under the SAML 2.0 assertion schema, else the first error."""
    schema = assertion_schema()
    with _lock:
        if schema.validate(_values_set_aside(assertion)):
            return None
        error = schema.error_log[0] if len(schema.error_log) else None
    return "unknown schema error" if error is None else error.message
