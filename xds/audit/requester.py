"""The verified requester, as an audit message names it (ITI TF-2b §3.40.4.2.5, ITI TF-2a §3.20.7.1).

The trust model hands the endpoint a security context (``xds.trust.wssecurity.SecurityContext``:
``context.assertion`` is the verified XUA assertion, ``.attributes`` its trust-framework
attributes). The audit library reads it only through the accessors here, by attribute name, so
the trust model can grow without the audit messages changing: a context without an assertion
(trust off, or a request refused before one was verified) reads as "no human requestor".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    """Who asked, why and for whom, as the verified assertion says."""

    subject: str = ""  # subject-id: the person's name or id
    hpr_number: str = ""  # Helsepersonellregisteret number
    role: str = ""
    organisation: str = ""
    organisation_id: str = ""
    purpose_of_use: str = ""
    patient: str = ""  # resource-id
    issuer: str = ""

    @property
    def known(self) -> bool:
        return bool(self.subject or self.hpr_number)

    @property
    def break_the_glass(self) -> bool:
        return self.purpose_of_use.upper() == "BTG"

    def user_id(self) -> str:
        """ActiveParticipant UserID: the HPR number when there is one, else the subject."""
        return self.hpr_number or self.subject

    def user_name(self) -> str:
        """UserName in the XUA form ``alias<user@issuer>`` (ITI TF-2b §3.40.4.2.5)."""
        user = self.subject or self.hpr_number
        return f"{self.hpr_number or user}<{user}@{self.issuer}>" if self.issuer else user


NOBODY = Requester()  # no verified assertion: no one named


def _attr(obj: object, *names: str) -> str:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return ""
    return obj if isinstance(obj, str) else str(obj)


def from_context(context: object | None) -> Requester:
    """The requester of a verified request, or an empty one."""
    if context is None:
        return NOBODY
    assertion = getattr(context, "assertion", None)
    attributes = getattr(assertion, "attributes", None)
    if attributes is None:
        return NOBODY
    return Requester(
        subject=_attr(attributes, "subject_id"),
        hpr_number=_attr(attributes, "hpr_number"),
        role=_attr(attributes, "role"),
        organisation=_attr(attributes, "organisation") or _attr(attributes, "organisation_id"),
        organisation_id=_attr(attributes, "organisation_id"),
        purpose_of_use=_attr(attributes, "purpose_of_use"),
        patient=_attr(attributes, "resource_id"),
        issuer=_attr(assertion, "issuer"),
    )


def from_attributes(attributes: object, issuer: str = "") -> Requester:
    """The requester a client speaks for (its own assertion's attributes)."""

    class _Assertion:
        pass

    holder = _Assertion()
    holder.attributes = attributes  # type: ignore[attr-defined]
    holder.issuer = issuer  # type: ignore[attr-defined]

    class _Context:
        assertion = holder

    return from_context(_Context())
