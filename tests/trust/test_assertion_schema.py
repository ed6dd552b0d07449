"""Assertions that break the SAML 2.0 assertion schema are refused over HTTP with a WS-Security fault.

SAML 2.0 Core §2 (saml-schema-assertion-2.0.xsd) and ITI TF-2 §3.40.4.1.2 / §3.40.4.2: each form
here is signed by the trusted identity provider after it was spoiled, so only the structure is
wrong; the server answers a SOAP 1.2 Sender fault with wsse:InvalidSecurityToken and keeps serving.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import httpx
import pytest
from lxml import etree
from support import RunningServer, make_config, new_database, require_trust

from xds import safexml, samples
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.trust import assertion as xa
from xds.trust.keys import KeySet
from xds.trust.wssecurity import NS_WSSE, secure_request

ISSUER = "https://idp.schema.test"
PATIENT = samples.patient_cx("13116900216")
S = "{" + xa.NS_SAML + "}"
ENV = f"{{{v.NS_SOAP12}}}"
HL7_CE = (
    '<hl7:{tag} xmlns:hl7="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xsi:type="hl7:CE" code="{code}" codeSystem="{system}"/>'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("saml-schema")
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        require_trust(cfg, keys, ISSUER)
        with RunningServer(cfg) as running:
            yield running


def find_documents() -> bytes:
    return (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{PATIENT.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()


def ask(server: RunningServer, keys: KeySet, spoil: Callable[[etree._Element], None]) -> httpx.Response:
    """A FindDocuments query whose assertion ``spoil`` changed before the identity provider signed it."""
    url = f"{server.url}/registry"
    attributes = xa.TrustAttributes(
        subject_id="Kari Nordmann",
        hpr_number="9144900",
        role="LE",
        organisation="Kommunen",
        organisation_id="983971636",
        purpose_of_use="TREAT",
        resource_id=PATIENT,
    )
    token = xa.build_assertion(attributes, issuer=ISSUER)
    spoil(token)
    signed = xa.sign_assertion(token, keys.idp.key_pem(), keys.idp.cert_pem())
    sender = keys.institutions["kommune"]
    env, _ = build_request(v.ACTION_STORED_QUERY, find_documents(), to=url)
    data = secure_request(env, assertion=signed, key_pem=sender.key_pem(), cert_pem=sender.cert_pem())
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def authn(token: etree._Element) -> etree._Element:
    found = token.find(S + "AuthnStatement")
    assert found is not None
    return found


def second_authn_context(token: etree._Element) -> None:
    context = authn(token).find(S + "AuthnContext")
    assert context is not None
    context.addnext(copy.deepcopy(context))


def no_authn_instant(token: etree._Element) -> None:
    del authn(token).attrib["AuthnInstant"]


def no_authn_context(token: etree._Element) -> None:
    context = authn(token).find(S + "AuthnContext")
    assert context is not None
    authn(token).remove(context)


def conditions_after_statements(token: etree._Element) -> None:
    conditions = token.find(S + "Conditions")
    assert conditions is not None
    token.append(conditions)


def unknown_saml_element(token: etree._Element) -> None:
    authn(token).addprevious(etree.Element(S + "Statement2"))


def version_1_1(token: etree._Element) -> None:
    token.set("Version", "1.1")


def no_issue_instant(token: etree._Element) -> None:
    del token.attrib["IssueInstant"]


def coded_role_and_purpose(token: etree._Element) -> None:
    """Role and PurposeOfUse as HL7 CE elements, as ITI TF-2 §3.40.4.1.2 spells them."""
    codes = {
        xa.A_ROLE: ("Role", "LE", "2.16.578.1.12.4.1.1.9060"),
        xa.A_PURPOSE: ("PurposeOfUse", "TREAT", "2.16.840.1.113883.1.11.20448"),
    }
    for value in token.iter(S + "AttributeValue"):
        name = value.getparent().get("Name")  # type: ignore[union-attr]
        if name in codes:
            tag, code, system = codes[name]
            value.text = None
            value.append(safexml.parse(HL7_CE.format(tag=tag, code=code, system=system).encode()))


def fault(response: httpx.Response) -> tuple[str, str]:
    """The fault's subcode as {namespace}name, and its reason."""
    root = safexml.parse(response.content)
    value = root.find(f".//{ENV}Subcode/{ENV}Value")
    assert value is not None, response.text
    prefix, _, name = (value.text or "").strip().rpartition(":")
    return f"{{{value.nsmap.get(prefix or None)}}}{name}", root.findtext(f".//{ENV}Reason/{ENV}Text") or ""


@pytest.mark.parametrize(
    ("spoil", "named"),
    [
        (second_authn_context, "AuthnContext"),  # SAML 2.0 Core §2.7.2: exactly one
        (no_authn_instant, "AuthnInstant"),  # §2.7.2: required
        (no_authn_context, "AuthnContext"),
        (conditions_after_statements, "Conditions"),  # §2.3.3: the order of an Assertion's parts
        (unknown_saml_element, "Statement2"),
        (no_issue_instant, "IssueInstant"),  # §2.3.3: required
        (version_1_1, "Version"),  # §2.3.3: "2.0"
    ],
)
def test_assertions_off_the_saml_schema_are_refused(
    server: RunningServer, keys: KeySet, spoil: Callable[[etree._Element], None], named: str
) -> None:
    response = ask(server, keys, spoil)
    assert response.status_code == 400, response.text
    subcode, reason = fault(response)
    assert subcode == f"{{{NS_WSSE}}}InvalidSecurityToken", (subcode, reason)
    assert "SAML 2.0" in reason and named in reason, reason
    assert ask(server, keys, lambda token: None).status_code == 200  # still serving


def test_hl7_coded_attributes_are_accepted(server: RunningServer, keys: KeySet) -> None:
    """AttributeValue is xs:anyType: an HL7 CE inside it (xsi:type="hl7:CE") is no schema error."""
    response = ask(server, keys, coded_role_and_purpose)
    assert response.status_code == 200, response.text
    assert v.RESPONSE_SUCCESS.encode() in response.content
