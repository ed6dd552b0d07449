"""XUA tests of the NIST kit (``reg_xua``, ``rep_xua``): requests carrying the assertion each test names.

The toolkit takes each XUA test's SAML assertion from a test identity provider, for the user named
after the test id's last ``_``: ``11990_expired`` asks as user ``expired``, ``11990eval_valid`` as
``valid``. This module plays that identity provider with the trust model (``xds.trust``): a
development CA, an identity provider and an institution made for the replay (``init_keys``), an
assertion built and signed for each request (ITI TF-2b §3.40, SAML 2.0 Core §2), and the
institution's WS-Security signature over Body, Timestamp, assertion and addressing headers.

What each user's assertion is (the kit's plans say which must be refused with a SOAP fault):

- ``valid``: as it should be; ``withauthzconsent``: also names a consent policy (``urn:ihe:iti:xua:2012:acp``);
- ``expired``: its NotOnOrAfter has passed; ``notyetvalid``: its NotBefore is an hour ahead;
- ``unsigned``: no identity provider signature; ``unknownaudience``: for an audience this
  deployment is not;
- ``secondrole`` / ``secondpurposeofuse``: a second role / purpose-of-use attribute;
- ``secondauthncontext``: an AuthnStatement with a second AuthnContext; ``invalidauthnstatement``:
  an AuthnStatement without its AuthnInstant (SAML 2.0 Core §2.7.2 requires one of each).
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from xds import safexml
from xds.soap.envelope import Attachment
from xds.trust import assertion as xa
from xds.trust.keys import KeySet, init_keys
from xds.trust.wssecurity import secure_request

USERS = frozenset(
    {
        "valid",
        "expired",
        "notyetvalid",
        "unsigned",
        "unknownaudience",
        "secondrole",
        "secondpurposeofuse",
        "secondauthncontext",
        "invalidauthnstatement",
        "withauthzconsent",
    }
)
ISSUER = "https://idp.conformance.xds.invalid"
AUDIENCE = "urn:xds:conformance"
INSTITUTION = "conformance"
_S = "{" + xa.NS_SAML + "}"
CLASS_CODE = "41a5887f-8865-4c09-adf7-e362475b143a"  # XDSDocumentEntry.classCode scheme


def test_user(test_id: str, collections: tuple[str, ...]) -> str | None:
    """The XUA test user a test asks as, or None for a test that is no XUA test."""
    if not any(tag.endswith("_xua") for tag in collections):
        return None
    user = test_id.rpartition("_")[2]
    return user if user in USERS else "valid"


test_user.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def user_for_section(user: str, section: str) -> str:
    """The user a section asks as: the test's, except in the sections that check what the request
    under test left behind (``eval…``), which ask as the valid user — their answer is judged, and
    the toolkit's plans expect it to be Success whatever the test's user."""
    return "valid" if section.startswith("eval") else user


def kit_class_codes(testkit: Path) -> frozenset[str]:
    """The classCodes the kit's documents carry (another affinity domain than Norway's)."""
    found: set[str] = set()
    for path in testkit.rglob("*.xml"):
        data = path.read_bytes()
        if CLASS_CODE.encode() not in data:
            continue
        try:
            root = safexml.parse(data)
        except safexml.XmlRejected:
            continue
        found.update(
            e.get("nodeRepresentation", "")
            for e in root.iter()
            if isinstance(e.tag, str) and e.get("classificationScheme") == f"urn:uuid:{CLASS_CODE}"
        )
    return frozenset(found - {""})


@dataclass
class XuaIdentity:
    """The replay's identity provider and institution, and what a deployment must trust of them;
    ``readable_classes``: the classCodes care may read there (the kit's)."""

    keys: KeySet
    readable_classes: frozenset[str] = frozenset()
    issuer: str = ISSUER
    audience: str = AUDIENCE

    @classmethod
    def make(cls, folder: Path, testkit: Path) -> XuaIdentity:
        return cls(init_keys(str(folder), [INSTITUTION]), kit_class_codes(testkit))

    @property
    def ca_file(self) -> str:
        return str(self.keys.ca.cert_path)

    @property
    def idp_cert_file(self) -> str:
        return str(self.keys.idp.cert_path)

    def secure(
        self, envelope: bytes, user: str, patient: str, parts: dict[str, bytes] | None = None
    ) -> bytes:
        """``envelope`` with a wsse:Security header carrying ``user``'s assertion about ``patient``."""
        sender = self.keys.institutions[INSTITUTION]
        return secure_request(
            envelope,
            assertion=self.assertion(user, patient),
            key_pem=sender.key_pem(),
            cert_pem=sender.cert_pem(),
            parts={
                cid: Attachment.from_bytes(cid, "application/octet-stream", data)
                for cid, data in (parts or {}).items()
            }
            or None,
        )

    def assertion(self, user: str, patient: str) -> etree._Element:
        now = dt.datetime.now(dt.UTC)
        attributes = xa.TrustAttributes(
            subject_id=f"NIST XUA test user {user}",
            hpr_number="9144900",
            role="LE",
            organisation="Conformance",
            organisation_id="983971636",
            purpose_of_use="TREAT",
            resource_id=patient,
            consent_policy=["urn:oid:1.3.6.1.4.1.21367.2017.7.104"] if user == "withauthzconsent" else [],
        )
        moment = {"expired": now - dt.timedelta(hours=1), "notyetvalid": now + dt.timedelta(hours=1)}.get(
            user, now
        )
        audience = "urn:xds:conformance:unknown-audience" if user == "unknownaudience" else self.audience
        token = xa.build_assertion(attributes, issuer=self.issuer, audience=audience, now=moment)
        _spoil(token, user)
        if user == "unsigned":
            signature = token.find(f"{{{xa.NS_DS}}}Signature")
            if signature is not None:
                token.remove(signature)
            return token
        return xa.sign_assertion(token, self.keys.idp.key_pem(), self.keys.idp.cert_pem())


def _spoil(token: etree._Element, user: str) -> None:
    """Make the assertion what ``user`` stands for (see the module's list)."""
    statement = token.find(_S + "AttributeStatement")
    duplicated = {"secondrole": xa.A_ROLE, "secondpurposeofuse": xa.A_PURPOSE}.get(user)
    if duplicated and statement is not None:
        for attribute in statement.findall(_S + "Attribute"):
            if attribute.get("Name") == duplicated:
                second = copy.deepcopy(attribute)
                value = second.find(_S + "AttributeValue")
                if value is not None:
                    value.text = "PATRQT" if duplicated == xa.A_PURPOSE else "XX"
                attribute.addnext(second)
                break
    authn = token.find(_S + "AuthnStatement")
    if authn is None:
        return
    context = authn.find(_S + "AuthnContext")
    if user == "secondauthncontext" and context is not None:
        context.addnext(copy.deepcopy(context))
    elif user == "invalidauthnstatement":
        del authn.attrib["AuthnInstant"]


__all__ = ["AUDIENCE", "ISSUER", "USERS", "XuaIdentity", "kit_class_codes", "test_user", "user_for_section"]
