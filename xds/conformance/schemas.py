"""Validating the answers a replay receives against the official IHE and ebXML schemas.

Every answer payload is checked before it is judged: ``RegistryResponse`` (ebRS ``rs.xsd``),
``AdhocQueryResponse`` (``query.xsd``) and ``RetrieveDocumentSetResponse``
(``XDS.b_DocumentRepository.xsd``, ITI TF-2b §3.43.4.2). An MTOM answer is validated as its XOP
infoset: each ``xop:Include`` stands for the base64 text of the part it names (XOP 1.0 §3).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path

from lxml import etree

from xds.metadata import vocabulary as v
from xds.soap.envelope import Attachment
from xds.soap.mtom import XOP_INCLUDE, normalize_cid

# answer root element -> schema file under the IHE schema folder (iti/schema)
_SCHEMA_FILES = {
    f"{{{v.NS_RS}}}RegistryResponse": "ebRS/rs.xsd",
    f"{{{v.NS_QUERY}}}AdhocQueryResponse": "ebRS/query.xsd",
    f"{{{v.NS_XDSB}}}RetrieveDocumentSetResponse": "IHE/XDS.b_DocumentRepository.xsd",
}


class AnswerSchemas:
    """The schemas of the answers a replay judges, compiled once each on first use."""

    def __init__(self, directory: Path) -> None:
        if not (directory / "ebRS" / "rs.xsd").is_file():
            raise OSError(f"{directory} holds no IHE schemas (expected ebRS/rs.xsd under it)")
        self.directory = directory
        self._compiled: dict[str, etree.XMLSchema] = {}

    def _schema(self, tag: str) -> etree.XMLSchema | None:
        name = _SCHEMA_FILES.get(tag)
        if name is None:
            return None
        if name not in self._compiled:
            self._compiled[name] = etree.XMLSchema(etree.parse(str(self.directory / name)))
        return self._compiled[name]

    def problems(
        self, payload: etree._Element, attachments: dict[str, Attachment] | None = None
    ) -> list[str]:
        """Why ``payload`` is not a valid answer (empty when it is)."""
        schema = self._schema(payload.tag)
        if schema is None:
            return [f"{etree.QName(payload).localname} is not an answer this replay knows a schema for"]
        infoset = xop_infoset(payload, attachments or {})
        if schema.validate(infoset):
            return []
        return [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:3]]


def xop_infoset(payload: etree._Element, attachments: dict[str, Attachment]) -> etree._Element:
    """A copy of ``payload`` with every ``xop:Include`` replaced by its part's base64 text."""
    if next(payload.iter(XOP_INCLUDE), None) is None:
        return payload
    out = copy.deepcopy(payload)
    for include in list(out.iter(XOP_INCLUDE)):
        parent = include.getparent()
        assert parent is not None
        part = attachments.get(normalize_cid(include.get("href", "")))
        parent.remove(include)
        parent.text = base64.b64encode(part.read()).decode() if part is not None else ""
    return out


def shipped() -> AnswerSchemas:
    """The official schemas shipped with the package (``xds.schemas``)."""
    from xds.schemas import standards_dir

    return AnswerSchemas(standards_dir() / "iti" / "schema")
