"""Who may read a patient's access log (the audit trail's "who read my record" view).

The request carries a signed XUA assertion (ITI TF-2b §3.40) as ``Authorization: SAML <base64>``.
It is verified like any other (signed by a certificate pinned to its issuer, validity window,
audience); then the log is released only to the citizen it is about — recognised as the access
policy recognises citizens (:mod:`xds.trust.policy`): a citizen purpose of use (``PATRQT`` by
default) and a subject-id that is that patient's national id in any common spelling (a clinician's
assertion names the patient only as resource-id) — or to an assertion whose role is the configured
auditor role.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from cryptography import x509

from xds import safexml
from xds.trust.assertion import AssertionRejected, verify_assertion
from xds.trust.policy import national_id, role_code


class AccessLogGuard:
    def __init__(
        self,
        *,
        issuers: Mapping[str, Sequence[x509.Certificate]],
        audiences: Sequence[str],
        auditor_role: str,
        citizen_purposes: frozenset[str] = frozenset({"PATRQT"}),
    ) -> None:
        self.issuers = issuers  # each allowed issuer pinned to its certificate(s)
        self.audiences = audiences
        self.auditor_role = auditor_role
        self.citizen_purposes = citizen_purposes

    def refusal(self, authorization: str, patient: str) -> tuple[int, str] | None:
        """None when the log of ``patient`` may be released, else (HTTP status, reason)."""
        if not patient:
            return 400, "name the patient: ?patient=ID"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "saml" or not token.strip():
            return 401, "a signed XUA assertion is required (Authorization: SAML <base64>)"
        if not self.issuers:
            return 403, "no assertion issuers are configured ([[trust.issuer]])"
        try:
            element = safexml.parse(base64.b64decode(token.strip(), validate=True))
            verified = verify_assertion(element, issuers=self.issuers, audience=list(self.audiences))
        except (binascii.Error, ValueError):
            return 401, "the assertion is not base64 of an XML document"
        except AssertionRejected as exc:
            return 401, f"assertion refused: {exc.reason}"
        except Exception:
            return 401, "the assertion could not be read"
        who = verified.attributes
        if self.auditor_role and role_code(who.role) == self.auditor_role:
            return None
        citizen = who.purpose_of_use in self.citizen_purposes  # as AccessPolicy.decide reads it
        if citizen and national_id(who.subject_id) and national_id(who.subject_id) == national_id(patient):
            return None
        return 403, "only the citizen the log is about, or an auditor, may read it"
