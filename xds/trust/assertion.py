"""XUA (ITI-40) SAML 2.0 assertions with Norway's trust-framework attributes: build, sign, verify.

ITI TF-2 §3.40.4.1 (Provide X-User Assertion) and OASIS SAML 2.0 Core §2 give the structure; the
attribute names are the ones of the national trust framework (``shared/profiles/norway.md``): who
asks (subject id, HPR number, role, organisation, child organisation, facility), why (purpose of
use, care-relationship healthcare service, decision reference) and for whom (resource-id: the
patient), plus the access-consent policy.

Signatures are enveloped XML-DSig, RSA-SHA256, exclusive C14N, the Signature placed after the
Issuer as SAML requires. Verification trusts only what was signed: the attributes handed back are
read from the element the signature covers (:mod:`xds.trust.xmldsig`), never from the surrounding
document, so moving, duplicating or wrapping elements cannot change what is believed.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from lxml import etree
from signxml import XMLSigner

from xds.trust import samlschema, xmldsig
from xds.trust.keys import signature_algorithm

NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
_S = "{" + NS_SAML + "}"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

# attribute names (shared/profiles/norway.md, "Trust framework")
A_SUBJECT_ID = "urn:oasis:names:tc:xacml:1.0:subject:subject-id"
A_HPR = "urn:oasis:names:tc:xspa:1.0:subject:npi"
A_PROVIDER_ID = "urn:ihe:iti:xua:2017:subject:provider-identifier"
A_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
A_ORGANISATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
A_ORGANISATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
A_CHILD_ORGANISATION = "urn:oasis:names:tc:xspa:1.0:subject:child-organization"
A_FACILITY = "urn:oasis:names:tc:xspa:1.0:subject:facility"
A_CHILD_ORGANISATION_NAME = "urn:nhn:trust-framework:1.0:ext:subject:child-organization-name"
A_FACILITY_NAME = "urn:nhn:trust-framework:1.0:ext:subject:facility-name"
A_HEALTHCARE_SERVICE = "urn:nhn:trust-framework:1.0:ext:care-relationship:healthcare-service"
A_PURPOSE_DETAILS = "urn:nhn:trust-framework:1.0:ext:care-relationship:purpose-of-use-details"
A_DECISION_REF = "urn:nhn:trust-framework:1.0:ext:care-relationship:decision-ref"
A_PURPOSE = "urn:oasis:names:tc:xacml:2.0:action:purpose"
A_RESOURCE_ID = "urn:oasis:names:tc:xacml:1.0:resource:resource-id"
A_CONSENT_POLICY = "urn:ihe:iti:xua:2012:acp"
A_BPPC_DOCID = "urn:ihe:iti:bppc:2007:docid"

DEFAULT_AUDIENCE = "nhn:dokumentdeling-saml"  # the national one; a deployment names its own

# the attributes a request must carry to be judged at all
REQUIRED = (A_SUBJECT_ID, A_ORGANISATION_ID, A_PURPOSE, A_RESOURCE_ID)


class AssertionRejected(Exception):
    """The assertion is not acceptable; ``reason`` says why (for the SOAP fault and the audit log)."""

    def __init__(self, reason: str, subcode: str = "wsse:InvalidSecurity") -> None:
        super().__init__(reason)
        self.reason = reason
        self.subcode = subcode


@dataclass
class TrustAttributes:
    """Who asks, why and for whom, as the trust framework names it."""

    subject_id: str
    hpr_number: str = ""
    role: str = ""
    organisation: str = ""
    organisation_id: str = ""  # organisasjonsnummer
    child_organisation: str = ""
    child_organisation_name: str = ""
    facility: str = ""
    facility_name: str = ""
    purpose_of_use: str = "TREAT"
    purpose_of_use_details: str = ""
    healthcare_service: str = ""
    decision_ref: str = ""
    resource_id: str = ""  # the patient, a CX
    consent_policy: list[str] = field(default_factory=list)

    def as_pairs(self) -> list[tuple[str, str]]:
        pairs = [
            (A_SUBJECT_ID, self.subject_id),
            (A_HPR, self.hpr_number),
            (A_PROVIDER_ID, self.hpr_number),
            (A_ROLE, self.role),
            (A_ORGANISATION, self.organisation),
            (A_ORGANISATION_ID, self.organisation_id),
            (A_CHILD_ORGANISATION, self.child_organisation),
            (A_CHILD_ORGANISATION_NAME, self.child_organisation_name),
            (A_FACILITY, self.facility),
            (A_FACILITY_NAME, self.facility_name),
            (A_PURPOSE, self.purpose_of_use),
            (A_PURPOSE_DETAILS, self.purpose_of_use_details),
            (A_HEALTHCARE_SERVICE, self.healthcare_service),
            (A_DECISION_REF, self.decision_ref),
            (A_RESOURCE_ID, self.resource_id),
        ]
        pairs += [(A_CONSENT_POLICY, p) for p in self.consent_policy]
        return [(name, value) for name, value in pairs if value]

    @classmethod
    def from_values(cls, values: dict[str, list[str]]) -> TrustAttributes:
        def one(name: str) -> str:
            found = values.get(name, [])
            if len(found) > 1:
                raise AssertionRejected(f"attribute {name} appears more than once")
            return found[0] if found else ""

        return cls(
            subject_id=one(A_SUBJECT_ID),
            hpr_number=one(A_HPR),
            role=one(A_ROLE),
            organisation=one(A_ORGANISATION),
            organisation_id=one(A_ORGANISATION_ID),
            child_organisation=one(A_CHILD_ORGANISATION),
            child_organisation_name=one(A_CHILD_ORGANISATION_NAME),
            facility=one(A_FACILITY),
            facility_name=one(A_FACILITY_NAME),
            purpose_of_use=one(A_PURPOSE),
            purpose_of_use_details=one(A_PURPOSE_DETAILS),
            healthcare_service=one(A_HEALTHCARE_SERVICE),
            decision_ref=one(A_DECISION_REF),
            resource_id=one(A_RESOURCE_ID),
            consent_policy=values.get(A_CONSENT_POLICY, []),
        )


def _instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_assertion(
    attributes: TrustAttributes,
    *,
    issuer: str,
    audience: str = DEFAULT_AUDIENCE,
    lifetime: dt.timedelta = dt.timedelta(minutes=5),
    now: dt.datetime | None = None,
    assertion_id: str | None = None,
) -> etree._Element:
    """An unsigned SAML 2.0 Assertion (SAML Core §2.3.3) carrying ``attributes``."""
    now = now or dt.datetime.now(dt.UTC)
    aid = assertion_id or f"_{uuid.uuid4().hex}"
    E = f"{{{NS_SAML}}}"
    root = etree.Element(
        E + "Assertion", nsmap={"saml2": NS_SAML}, ID=aid, Version="2.0", IssueInstant=_instant(now)
    )
    etree.SubElement(root, E + "Issuer").text = issuer
    # signxml puts the enveloped signature where this placeholder stands: after Issuer (SAML Core §5.4.1)
    etree.SubElement(root, f"{{{NS_DS}}}Signature", nsmap={"ds": NS_DS}, Id="placeholder")
    subject = etree.SubElement(root, E + "Subject")
    name_id = etree.SubElement(
        subject, E + "NameID", Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
    )
    name_id.text = attributes.subject_id
    etree.SubElement(subject, E + "SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer")
    conditions = etree.SubElement(
        root, E + "Conditions", NotBefore=_instant(now), NotOnOrAfter=_instant(now + lifetime)
    )
    etree.SubElement(etree.SubElement(conditions, E + "AudienceRestriction"), E + "Audience").text = audience
    authn = etree.SubElement(root, E + "AuthnStatement", AuthnInstant=_instant(now))
    etree.SubElement(
        etree.SubElement(authn, E + "AuthnContext"), E + "AuthnContextClassRef"
    ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
    statement = etree.SubElement(root, E + "AttributeStatement")
    for name, value in attributes.as_pairs():
        attr = etree.SubElement(statement, E + "Attribute", Name=name)
        etree.SubElement(attr, E + "AttributeValue").text = value
    return root


def sign_assertion(assertion: etree._Element, key_pem: bytes, cert_pem: bytes) -> etree._Element:
    """The assertion with an enveloped RSA-SHA256 (or ECDSA-SHA256) / exclusive-C14N signature over it."""
    signer = XMLSigner(
        signature_algorithm=signature_algorithm(key_pem), digest_algorithm="sha256", c14n_algorithm=EXC_C14N
    )
    return signer.sign(
        assertion,
        key=key_pem,
        cert=cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem,
        reference_uri="#" + assertion.get("ID", ""),
        id_attribute="ID",
    )


@dataclass(frozen=True)
class VerifiedAssertion:
    """What a verified assertion says; every field read from the signed element."""

    assertion_id: str
    issuer: str
    audience: list[str]
    not_on_or_after: dt.datetime
    attributes: TrustAttributes
    signer: x509.Certificate


_XS_DATETIME = re.compile(r"(-?\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?")


def xs_datetime(value: str | None, what: str) -> dt.datetime:
    """An xs:dateTime in any of its forms (fractions of any length, Z, an offset or none = UTC)."""
    match = _XS_DATETIME.fullmatch((value or "").strip())
    if not match:
        raise AssertionRejected(f"{what} {value!r} is not an xs:dateTime")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or ".0")[1:7].ljust(6, "0")),
            tzinfo=dt.UTC,
        )
    except ValueError:
        raise AssertionRejected(f"{what} {value!r} is not an xs:dateTime") from None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return moment


def _attribute_value(value: etree._Element) -> str:
    """A plain string, or the code of an HL7 CE element (ITI TF-2 §3.40.4.1.2: Role, PurposeOfUse)."""
    coded = next((child for child in value if isinstance(child.tag, str)), None)
    if coded is not None:
        return (coded.get("code") or "").strip()
    return (value.text or "").strip()


def issuer_of(assertion: etree._Element) -> str:
    """The Issuer an assertion names (not yet verified: to pick the certificates pinned to it)."""
    return (assertion.findtext(_S + "Issuer") or "").strip()


def _verify_signature(
    assertion: etree._Element, issuers: Mapping[str, Sequence[x509.Certificate]]
) -> tuple[etree._Element, x509.Certificate]:
    """The signed Assertion and the pinned certificate its signature holds under."""
    name = issuer_of(assertion)
    pinned = issuers.get(name)
    if not pinned:
        raise AssertionRejected(f"issuer {name!r} is not trusted here", "wsse:FailedAuthentication")
    signatures = assertion.findall(f"{{{NS_DS}}}Signature")
    if len(signatures) != 1:
        raise AssertionRejected("the assertion must carry one enveloped signature", "wsse:FailedCheck")
    problem = "no certificate is pinned"
    for cert in pinned:
        try:
            signed = xmldsig.verify(signatures[0], cert.public_key(), enveloped=assertion)
        except xmldsig.SignatureInvalid as exc:
            problem = str(exc)
            continue
        if len(signed) != 1 or signed[0] is not assertion:
            raise AssertionRejected(
                "the assertion's signature does not cover the assertion", "wsse:FailedCheck"
            )
        return assertion, cert
    raise AssertionRejected(
        f"assertion signature is not valid under the certificate pinned to issuer {name!r}: {problem}",
        "wsse:FailedCheck",
    )


def _check_structure(assertion: etree._Element) -> None:
    """The assertion as SAML 2.0 Core §2 defines it (ITI TF-2 §3.40.4.2: the X-Service Provider
    validates it): valid under the OASIS assertion schema - e.g. an AuthnStatement has exactly one
    AuthnContext and its AuthnInstant (§2.7.2) - and of Version 2.0 (§2.3.3)."""
    problem = samlschema.schema_problem(assertion)
    if problem is not None:
        raise AssertionRejected(
            f"the assertion does not follow the SAML 2.0 assertion schema: {problem}",
            "wsse:InvalidSecurityToken",
        )
    if assertion.get("Version") != "2.0":
        raise AssertionRejected(
            f"the assertion's Version is {assertion.get('Version')!r}; a SAML 2.0 assertion's is '2.0'",
            "wsse:InvalidSecurityToken",
        )


def verify_assertion(
    assertion: etree._Element,
    *,
    issuers: Mapping[str, Sequence[x509.Certificate]],
    audience: str | Sequence[str] = DEFAULT_AUDIENCE,
    now: dt.datetime | None = None,
    clock_skew: dt.timedelta = dt.timedelta(seconds=60),
    max_lifetime: dt.timedelta = dt.timedelta(hours=8),
) -> VerifiedAssertion:
    """Check the signature (by a certificate pinned to its issuer), the structure (SAML 2.0 assertion
    schema), validity window and audience.

    ``issuers`` maps each trusted issuer name to its signing certificate(s), as SAML metadata pins
    an identity provider's keys: an institution's or a TLS certificate can never issue assertions.
    """
    now = now or dt.datetime.now(dt.UTC)
    if assertion.tag != _S + "Assertion":
        raise AssertionRejected("not a SAML 2.0 Assertion")
    signed, cert = _verify_signature(assertion, issuers)
    _check_structure(signed)
    issuer = issuer_of(signed)
    conditions = signed.find(_S + "Conditions")
    if conditions is None:
        raise AssertionRejected("assertion has no Conditions")
    not_before = xs_datetime(conditions.get("NotBefore") or signed.get("IssueInstant"), "NotBefore")
    not_after = xs_datetime(conditions.get("NotOnOrAfter"), "NotOnOrAfter")
    if not_after - not_before > max_lifetime:
        raise AssertionRejected(
            f"assertion lifetime {not_after - not_before} exceeds the {max_lifetime} allowed here",
            "wsse:FailedAuthentication",
        )
    if now + clock_skew < not_before:
        raise AssertionRejected(
            "assertion is not yet valid (NotBefore is in the future)", "wsse:FailedAuthentication"
        )
    if now - clock_skew >= not_after:
        raise AssertionRejected(
            "assertion has expired (NotOnOrAfter has passed)", "wsse:FailedAuthentication"
        )
    accepted = [audience] if isinstance(audience, str) else list(audience)
    audiences = [(a.text or "").strip() for a in conditions.iter(_S + "Audience")]
    if not audiences or not set(audiences) & set(accepted):
        raise AssertionRejected(
            f"assertion is meant for {audiences}, not {' or '.join(accepted)!r}", "wsse:FailedAuthentication"
        )
    values: dict[str, list[str]] = {}
    for statement in signed.iter(_S + "AttributeStatement"):
        for attr in statement.iter(_S + "Attribute"):
            values.setdefault(attr.get("Name", ""), []).extend(
                _attribute_value(val) for val in attr.iter(_S + "AttributeValue")
            )
    attrs = TrustAttributes.from_values(values)
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        raise AssertionRejected(f"assertion lacks required attributes: {', '.join(missing)}")
    return VerifiedAssertion(
        assertion_id=signed.get("ID", ""),
        issuer=issuer,
        audience=audiences,
        not_on_or_after=not_after,
        attributes=attrs,
        signer=cert,
    )
