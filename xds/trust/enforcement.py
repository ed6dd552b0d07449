"""The policy enforcement point in front of a SOAP endpoint (ITI TF-2 §3.40.4.2 X-Service Provider).

Per endpoint the trust model is ``off``, ``optional`` (a Security header, when present, must be
valid) or ``required``. A valid request has a verified XUA assertion and institution signature
(``xds.trust.wssecurity``); the handler then sees only the signed Body, Action and MessageID.
Assertion IDs and MessageIDs are remembered by a :class:`ReplayStore` (the deployment's database)
until they expire, so a replay is
refused by every worker process. The queried patient (ITI-18) must be the assertion's
resource-id, and retrieved documents (ITI-43) must belong to that patient.

Refusals are SOAP 1.2 Sender faults with a WS-Security subcode (wsse:InvalidSecurity,
wsse:FailedCheck, wsse:FailedAuthentication, wsse:MessageExpired) and a reason in plain words.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from anyio import to_thread
from lxml import etree
from starlette.types import Scope

from xds import safexml
from xds.metadata import vocabulary as v
from xds.soap.envelope import SoapFault, SoapRequest
from xds.trust.assertion import AssertionRejected, TrustAttributes
from xds.trust.policy import AccessPolicy
from xds.trust.wssecurity import NS_WSSE, SecurityContext, verify_request
from xds.trust.wssecurity import secure_response as sign_response

log = logging.getLogger("xds.trust")

PATIENT_PARAMETERS = (
    "$XDSDocumentEntryPatientId",
    "$XDSSubmissionSetPatientId",
    "$XDSFolderPatientId",
    "$patientId",
)


class ReplayStore(Protocol):
    """Where identifiers already used are remembered (the deployment's database, every worker)."""

    def first_time(self, identifier: str, expires: dt.datetime) -> bool: ...


class DocumentFacts(Protocol):
    """What the decision needs to know of stored documents (read by the registry actor)."""

    def owners(self, unique_ids: Iterable[str]) -> list[tuple[str, str]]: ...

    def refused(
        self,
        policy: AccessPolicy,
        who: TrustAttributes,
        *,
        uuids: Iterable[str] = (),
        unique_ids: Iterable[str] = (),
    ) -> set[str]: ...


class PolicyEnforcementPoint:
    """A :class:`xds.soap.endpoint.SecurityPolicy` for one endpoint."""

    def __init__(
        self,
        *,
        mode: str,
        ca_file: str | Path | list[str],
        issuers: list[str],
        audience: str,
        clock_skew: dt.timedelta,
        replay: ReplayStore,
        documents: DocumentFacts | None = None,
        policy: AccessPolicy | None = None,
        signing: tuple[bytes, bytes] | None = None,
    ) -> None:
        if mode not in ("off", "optional", "required"):
            raise ValueError(f"trust mode {mode!r}: choose off, optional or required")
        files = [str(ca_file)] if isinstance(ca_file, str | Path) else list(ca_file)
        if mode != "off" and (not files or not all(Path(f).is_file() for f in files)):
            raise ValueError(f"trust mode {mode} needs trust anchors (ca_file); {files!r} are not all files")
        self.mode = mode
        self.ca_file = ca_file
        self.issuers = issuers
        self.audience = audience
        self.clock_skew = clock_skew
        self.replay = replay
        self.documents = documents
        self.policy = policy or AccessPolicy()
        self.signing = signing  # (key PEM, certificate PEM) of the responding institution

    async def check(self, request: SoapRequest, scope: Scope) -> None:
        if self.mode == "off":
            return
        header = request.header
        has_security = header is not None and header.find(f"{{{NS_WSSE}}}Security") is not None
        if not has_security:
            if self.mode == "required":
                raise SoapFault(
                    "Sender",
                    "this endpoint requires a signed XUA assertion in a WS-Security header",
                    "wsse:InvalidSecurity",
                )
            return
        try:
            ctx = await to_thread.run_sync(self._verify, request.envelope)
        except AssertionRejected as exc:
            log.info("request refused: %s", exc.reason)
            raise SoapFault("Sender", exc.reason, exc.subcode) from None
        if ctx.action != request.action:
            raise SoapFault("Sender", "wsa:Action is not the one that was signed", "wsse:FailedCheck")
        for ident in (f"assertion:{ctx.assertion.assertion_id}", f"message:{ctx.message_id}"):
            if not await to_thread.run_sync(self.replay.first_time, ident, ctx.expires):
                raise SoapFault(
                    "Sender", f"replayed request ({ident.split(':')[0]} seen before)", "wsse:FailedCheck"
                )
        await to_thread.run_sync(self._check_patient, request.action, ctx)
        request.security = ctx
        request.body = ctx.payload
        request.message_id = ctx.message_id

    def _verify(self, envelope: etree._Element) -> SecurityContext:
        return verify_request(
            envelope,
            ca_pem_file=self.ca_file,
            issuers=self.issuers,
            audience=self.audience,
            clock_skew=self.clock_skew,
        )

    def _check_patient(self, action: str, ctx: SecurityContext) -> None:
        """The request is about the assertion's patient, and only that patient (resource-id)."""
        patient = ctx.assertion.attributes.resource_id
        payload = ctx.payload
        if action in (v.ACTION_STORED_QUERY, getattr(v, "ACTION_MULTI_PATIENT_QUERY", "")):
            asked = []
            for slot in payload.iter(f"{{{v.NS_RIM}}}Slot"):
                if slot.get("name") in PATIENT_PARAMETERS:
                    for value in slot.iter(f"{{{v.NS_RIM}}}Value"):
                        asked += [p.strip().strip("'") for p in (value.text or "").strip("()").split(",")]
            strangers = [p for p in asked if p and p != patient]
            if strangers:
                raise SoapFault(
                    "Sender",
                    f"the query asks about {strangers[0]!r}, the assertion is for {patient!r}",
                    "wsse:FailedAuthentication",
                )
        elif action == v.ACTION_RETRIEVE and self.documents is not None:
            uids = [(el.text or "").strip() for el in payload.iter(f"{{{v.NS_XDSB}}}DocumentUniqueId")]
            owners = self.documents.owners(uids)
            foreign = [uid for uid, owner in owners if owner != patient]
            if foreign:
                raise SoapFault(
                    "Sender",
                    f"document {foreign[0]} does not belong to the assertion's patient",
                    "wsse:FailedAuthentication",
                )
            refused = self.documents.refused(self.policy, ctx.assertion.attributes, unique_ids=uids)
            if refused:
                raise SoapFault(
                    "Sender",
                    f"the access policy does not release document {sorted(refused)[0]} for this purpose and role",
                    "wsse:FailedAuthentication",
                )

    def secure_response(self, request: SoapRequest, envelope: bytes) -> bytes:
        """Filtered by the access policy, then signed by the responding institution (when configured)."""
        envelope = self._filter(request, envelope)
        if self.signing is not None and isinstance(request.security, SecurityContext):
            key_pem, cert_pem = self.signing
            envelope = sign_response(envelope, key_pem=key_pem, cert_pem=cert_pem)
        return envelope

    def _filter(self, request: SoapRequest, envelope: bytes) -> bytes:
        """ITI-18 answers to a verified request carry only what the access policy releases."""
        ctx = request.security
        if not isinstance(ctx, SecurityContext) or self.documents is None:
            return envelope
        if request.action not in (v.ACTION_STORED_QUERY, getattr(v, "ACTION_MULTI_PATIENT_QUERY", "")):
            return envelope
        root = safexml.parse(envelope)
        rim = f"{{{v.NS_RIM}}}"
        candidates = [el for el in root.iter(rim + "ExtrinsicObject", rim + "ObjectRef")]
        refused = self.documents.refused(
            self.policy,
            ctx.assertion.attributes,
            uuids=[el.get("id", "") for el in candidates],
        )
        if not refused:
            return envelope
        for el in candidates:
            if el.get("id") in refused:
                el.getparent().remove(el)
        for assoc in list(root.iter(rim + "Association")):
            if assoc.get("sourceObject") in refused or assoc.get("targetObject") in refused:
                assoc.getparent().remove(assoc)
        log.info(
            "access policy withheld %d documents from %s", len(refused), ctx.assertion.attributes.subject_id
        )
        return etree.tostring(root)
