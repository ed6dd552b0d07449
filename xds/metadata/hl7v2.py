"""The HL7 v2.5 data types XDS metadata carries as strings (ITI TF-3 Table 4.2.3.1.7-2).

CX (patient identifiers), XON (organisations), XCN (persons), XTN (telecom) and DTM (date/time).
Each type parses from and formats to its ``^``/``&`` encoded form; the checks return a reason
string (empty when the value is acceptable) so validation can report every problem at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+\Z")
MAX_OID_LENGTH = 64


def is_oid(value: str, *, max_length: int = MAX_OID_LENGTH) -> bool:
    """An ISO OID in dotted form (ITI TF-3 §4.2.3.1.7: at most 64 characters)."""
    return len(value) <= max_length and _OID.match(value) is not None


def is_unique_id(value: str) -> bool:
    """A document/submission-set/folder uniqueId: an OID, optionally ``oid^extension``.

    Old text limited uniqueIds to 64 characters; CP-ITI-1134 allowed 128, which we accept.
    """
    if len(value) > 128:
        return False
    root, _, ext = value.partition("^")
    if not _OID.match(root):
        return False
    return len(ext) <= 16 if ext else "^" not in value


@dataclass(slots=True)
class HD:
    """HD: namespace id & universal id & universal id type."""

    namespace: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    @classmethod
    def parse(cls, text: str, sep: str = "&") -> HD:
        parts = text.split(sep)
        parts += [""] * (3 - len(parts))
        return cls(parts[0], parts[1], parts[2])

    def format(self, sep: str = "&") -> str:
        return sep.join([self.namespace, self.universal_id, self.universal_id_type]).rstrip(sep)


@dataclass(slots=True)
class CX:
    """CX: identifier with its assigning authority, e.g. ``13116900216^^^&2.16.578.1.12.4.1.4.1&ISO``."""

    id: str
    assigning_authority: HD = field(default_factory=HD)
    components: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> CX:
        comps = text.split("^")
        authority = HD.parse(comps[3]) if len(comps) > 3 else HD()
        return cls(comps[0], authority, comps)

    @property
    def authority_oid(self) -> str:
        return self.assigning_authority.universal_id

    def format(self) -> str:
        return f"{self.id}^^^&{self.assigning_authority.universal_id}&ISO"


def check_cx(text: str) -> str:
    """Why ``text`` is not a patient-id CX as XDS requires (ITI TF-3 §4.2.3.1.7), or ''.

    Only CX.1 and CX.4 may be present; CX.4 must be ``&OID&ISO``.
    """
    if not text or not text.strip():
        return "empty patient identifier"
    comps = text.split("^")
    if not comps[0]:
        return "CX.1 (id number) is empty"
    if len(comps) < 4:
        return "CX.4 (assigning authority) is missing"
    if any(c for i, c in enumerate(comps) if i not in (0, 3)):
        return "only CX.1 and CX.4 may be valued"
    hd = HD.parse(comps[3])
    if hd.namespace:
        return "CX.4 must not carry a namespace id (HD.1)"
    if hd.universal_id_type != "ISO":
        return "CX.4 universal id type must be ISO"
    if not is_oid(hd.universal_id):
        return f"CX.4 universal id {hd.universal_id!r} is not an OID"
    return ""


@dataclass(slots=True)
class XON:
    """XON: organisation name, with assigning authority (XON.6) and identifier (XON.10)."""

    name: str
    assigning_authority: HD = field(default_factory=HD)
    identifier: str = ""

    @classmethod
    def parse(cls, text: str) -> XON:
        comps = text.split("^")
        comps += [""] * (10 - len(comps))
        return cls(comps[0], HD.parse(comps[5]), comps[9])


def check_xon(text: str) -> str:
    """Why ``text`` is not an acceptable XON (ITI TF-3 Table 4.2.3.1.7-2), or ''."""
    comps = text.split("^")
    if not comps[0]:
        return "XON.1 (organization name) is empty"
    if len(comps) > 10:
        return "XON has more than 10 components"
    if len(comps) >= 10 and comps[9]:
        hd = HD.parse(comps[5]) if len(comps) > 5 else HD()
        if not is_oid(comps[9]) and not (hd.universal_id and hd.universal_id_type == "ISO"):
            return "XON.10 is not an OID and XON.6 gives no ISO assigning authority"
    return ""


@dataclass(slots=True)
class XCN:
    """XCN: a person: id ^ family ^ given ^ middle ^ suffix ^ prefix ^ degree ^^ authority."""

    id: str = ""
    family: str = ""
    given: str = ""
    assigning_authority: HD = field(default_factory=HD)

    @classmethod
    def parse(cls, text: str) -> XCN:
        comps = text.split("^")
        comps += [""] * (9 - len(comps))
        return cls(comps[0], comps[1], comps[2], HD.parse(comps[8]))


def check_xcn(text: str) -> str:
    """Why ``text`` is not an acceptable XCN, or ''. Either XCN.1 or XCN.2 must be valued."""
    comps = text.split("^")
    comps += [""] * (9 - len(comps))
    if not comps[0] and not comps[1]:
        return "XCN needs an id (XCN.1) or a family name (XCN.2)"
    if comps[0] and comps[8]:
        hd = HD.parse(comps[8])
        if hd.universal_id and hd.universal_id_type != "ISO":
            return "XCN.9 universal id type must be ISO"
    return ""


def check_xtn(text: str) -> str:
    """Why ``text`` is not an acceptable XTN, or ''. XTN.3 names the kind (Internet, PH, ...)."""
    comps = text.split("^")
    comps += [""] * (12 - len(comps))
    if comps[2] == "Internet" and "@" not in comps[3]:
        return "XTN.4 must be an e-mail address when XTN.3 is Internet"
    if not any(comps):
        return "XTN is empty"
    return ""


_DTM = re.compile(r"^[0-9]{4}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2})?)?)?)?)?\Z")
_DTM_LENGTHS = (4, 6, 8, 10, 12, 14)


def check_dtm(text: str) -> str:
    """Why ``text`` is not a DTM as XDS allows (YYYY[MM[DD[hh[mm[ss]]]]], UTC), or ''."""
    if not _DTM.match(text):
        return "not a DTM of the form YYYY[MM[DD[hh[mm[ss]]]]]"
    n = len(text)
    month = int(text[4:6]) if n >= 6 else 1
    day = int(text[6:8]) if n >= 8 else 1
    hour = int(text[8:10]) if n >= 10 else 0
    minute = int(text[10:12]) if n >= 12 else 0
    second = int(text[12:14]) if n >= 14 else 0
    if not 1 <= month <= 12:
        return "month out of range"
    if not 1 <= day <= 31:
        return "day out of range"
    if hour > 23 or minute > 59 or second > 59:
        return "time of day out of range"
    return ""


def dtm_bounds(text: str) -> tuple[str, str]:
    """The first and last 14-digit instants a DTM of any precision covers.

    Used by stored queries: a DTM at day precision covers a whole day (ITI TF-2 §3.18.4.1.2.3.7).
    """
    if len(text) not in _DTM_LENGTHS:
        raise ValueError(f"not a DTM: {text!r}")
    cut = len(text) - 4
    return text + "0101000000"[cut:], text + "1231235959"[cut:]


def dtm_key(text: str) -> str:
    """A 14-digit sortable form of a DTM (missing parts taken as the earliest instant)."""
    return dtm_bounds(text)[0]
