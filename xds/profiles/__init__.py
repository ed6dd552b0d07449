"""Deployment profiles: national rules layered on the IHE ones.

A profile says how the registry treats patient identifiers it has not heard of from a Patient
Identity Feed (ITI TF-2 §3.8): under the Norwegian profile a national person number with valid
check digits under its OID is a known patient, and a malformed one is a metadata error rather than
an unknown patient. The ``none`` profile is plain IHE: only fed patients are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xds.profiles import norway

PatientIdStatus = Literal["valid", "malformed", "not-national"]


@dataclass(frozen=True)
class Profile:
    """A named set of national rules."""

    name: str
    national_id_oids: tuple[str, ...] = ()

    def patient_id_status(self, id_number: str, authority_oid: str) -> PatientIdStatus:
        """``valid`` (a national id known without a feed), ``malformed`` or ``not-national``."""
        if authority_oid not in self.national_id_oids:
            return "not-national"
        if self.name == "norway":
            return "valid" if norway.valid_person_number(id_number, authority_oid) else "malformed"
        return "not-national"


PROFILES = {
    "norway": Profile("norway", norway.PERSON_ID_OIDS),
    "none": Profile("none"),
}


def get_profile(name: str | None) -> Profile:
    """The profile called ``name``; None or empty means the default, ``norway``."""
    key = (name or "norway").strip().lower()
    try:
        return PROFILES[key]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
