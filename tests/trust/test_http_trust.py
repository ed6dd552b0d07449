"""The trust model over real HTTP: signed requests pass, every forgery is refused with its reason,
and the endpoint keeps answering valid requests after each refusal."""

from __future__ import annotations

import copy
import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree
from signxml import SignatureConstructionMethod, XMLSigner
from support import RunningServer, make_config, require_trust

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.trust import assertion as xa
from xds.trust.keys import KeySet
from xds.trust.wssecurity import NS_WSSE, NS_WSU, secure_request

ISSUER = "https://helseid-xdssaml.test.nhn.no"
PATIENT = samples.patient_cx("13116900216")
OTHER = samples.patient_cx("29698496140")
ENV = f"{{{v.NS_SOAP12}}}"
WSSE = f"{{{NS_WSSE}}}"
WSU = f"{{{NS_WSU}}}"
DS = f"{{{xa.NS_DS}}}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[RunningServer]:
    from support import new_database

    tmp = tmp_path_factory.mktemp("trust")
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        require_trust(cfg, keys, ISSUER)
        cfg.trust.sign_cert = str(keys.institutions["ahus"].cert_path)
        cfg.trust.sign_key = str(keys.institutions["ahus"].key_path)
        with RunningServer(cfg) as running:
            yield running


def attrs(**over: object) -> xa.TrustAttributes:
    base: dict[str, object] = dict(
        subject_id="Kari Nordmann",
        hpr_number="9144900",
        role="LE",
        healthcare_service="S03",
        organisation="Kommunen",
        organisation_id="983971636",
        purpose_of_use="TREAT",
        resource_id=PATIENT,
    )
    base.update(over)
    return xa.TrustAttributes(**base)  # type: ignore[arg-type]


def find_documents(patient: str = PATIENT) -> bytes:
    return (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{patient.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()


def secured(
    keys: KeySet,
    url: str,
    body: bytes,
    action: str = v.ACTION_STORED_QUERY,
    *,
    attributes: xa.TrustAttributes | None = None,
    signer: object = None,
    idp: object = None,
    **assertion_kw: object,
) -> bytes:
    env, _ = build_request(action, body, to=url)
    who = idp or keys.idp
    assertion = xa.sign_assertion(
        xa.build_assertion(attributes or attrs(), issuer=assertion_kw.pop("issuer", ISSUER), **assertion_kw),  # type: ignore[arg-type]
        who.key_pem(),  # type: ignore[attr-defined]
        who.cert_pem(),  # type: ignore[attr-defined]
    )
    sender = signer or keys.institutions["kommune"]
    return secure_request(env, assertion=assertion, key_pem=sender.key_pem(), cert_pem=sender.cert_pem())  # type: ignore[attr-defined]


def post(url: str, data: bytes, action: str = v.ACTION_STORED_QUERY) -> httpx.Response:
    ctype = f'application/soap+xml; charset=UTF-8; action="{action}"'
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def fault(response: httpx.Response) -> tuple[str, str]:
    root = safexml.parse(response.content)
    sub = root.findtext(f".//{ENV}Subcode/{ENV}Value") or ""
    return sub.split(":")[-1], root.findtext(f".//{ENV}Reason/{ENV}Text") or ""


def assert_valid_still_answered(keys: KeySet, url: str) -> None:
    response = post(url, secured(keys, url, find_documents()))
    assert response.status_code == 200, response.text
    assert v.RESPONSE_SUCCESS.encode() in response.content


def coded(patient: str, class_code: str, confidentiality: str = "N"):  # type: ignore[no-untyped-def]
    """A one-document submission with the given class and confidentiality codes."""
    from xds.metadata.model import Classification, Slot

    sample = samples.submission(patient, rng=random.Random(uuid.uuid4().int))
    doc = sample.documents[0]
    doc.classifications = [
        c
        for c in doc.classifications
        if c.classification_scheme not in (v.DE_CLASS_CODE, v.DE_CONFIDENTIALITY_CODE)
    ]
    for scheme, code, system in (
        (v.DE_CLASS_CODE, class_code, "2.16.578.1.12.4.1.1.9602"),
        (v.DE_CONFIDENTIALITY_CODE, confidentiality, "2.16.578.1.12.4.1.1.9603"),
    ):
        doc.classifications.append(
            Classification(
                id=f"cl-{uuid.uuid4().hex[:8]}",
                classified_object=doc.id,
                classification_scheme=scheme,
                node_representation=code,
                slots=[Slot("codingScheme", [system])],
            )
        )
    return sample


def register(keys: KeySet, url: str, sample, patient: str = PATIENT) -> None:  # type: ignore[no-untyped-def]
    data = secured(
        keys,
        url,
        ebrim.submit_objects_request_bytes(sample.submission),
        v.ACTION_REGISTER,
        attributes=attrs(resource_id=patient),
    )
    response = post(url, data, v.ACTION_REGISTER)
    assert response.status_code == 200 and v.RESPONSE_SUCCESS.encode() in response.content, response.text


def found_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {el.get("id") for el in safexml.parse(response.content).iter(f"{{{v.NS_RIM}}}ObjectRef")}


def test_valid_signed_flow(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    register(keys, url, coded(PATIENT, "C00-1"))
    assert len(found_ids(post(url, secured(keys, url, find_documents())))) == 1


def test_access_policy(server: RunningServer, keys: KeySet) -> None:
    """Lab/radiology for care; NORS never; a citizen sees their own record except NORU; BTG passes."""
    person = samples.person_number(random.Random(77))  # a patient of this test alone
    patient = samples.patient_cx(person)
    url = f"{server.url}/registry"
    made = {
        name: coded(patient, cls, conf)
        for name, (cls, conf) in {
            "lab": ("C00-1", "N"),
            "xray": ("E00-1", "N"),
            "discharge": ("A00-1", "N"),
            "blocked": ("C00-1", "NORS"),
            "delayed": ("C00-1", "NORU"),
        }.items()
    }
    for sample in made.values():
        register(keys, url, sample, patient)

    def ask(**who: object) -> set[str]:
        return found_ids(
            post(
                url, secured(keys, url, find_documents(patient), attributes=attrs(resource_id=patient, **who))
            )
        )

    def names(ids: set[str]) -> set[str]:
        out = set()
        with server.app.state.registry.engine.connect() as conn:
            from sqlalchemy import select

            from xds.registry import schema as t

            for name, sample in made.items():
                uid = sample.documents[0].unique_id
                if (
                    conn.execute(
                        select(t.documents.c.uuid).where(t.documents.c.unique_id == uid)
                    ).scalar_one()
                    in ids
                ):
                    out.add(name)
        return out

    assert names(ask()) == {"lab", "xray", "delayed"}
    assert names(ask(purpose_of_use="BTG")) == {"lab", "xray", "delayed"}
    citizen = {"purpose_of_use": "PATRQT", "hpr_number": "", "role": ""}
    assert names(ask(subject_id=person, **citizen)) == {"lab", "xray", "discharge"}
    # the national id in its other common spellings is the same citizen
    for spelling in (patient, f"urn:oid:2.16.578.1.12.4.1.4.1:{person}"):
        assert names(ask(subject_id=spelling, **citizen)) == {"lab", "xray", "discharge"}
    # finding 4: a role without HPR authorisation, or a subject not the patient under a citizen
    # purpose, sees nothing; a citizen's spelling under a clinical purpose is not a citizen
    assert names(ask(role="HE", hpr_number="")) == set()
    assert names(ask(subject_id="01010112345", **citizen)) == set()
    assert names(ask(subject_id=f"urn:oid:2.16.578.1.12.4.1.4.1:{person}", hpr_number="", role="")) == set()


def _reparse(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def unsigned(keys: KeySet, url: str) -> bytes:
    return build_request(v.ACTION_STORED_QUERY, find_documents(), to=url)[0]


def tampered_body(keys: KeySet, url: str) -> bytes:
    root = _reparse(secured(keys, url, find_documents()))
    for value in root.iter(f"{{{v.NS_RIM}}}Value"):
        if PATIENT in (value.text or ""):
            value.text = f"'{OTHER}'"
    return etree.tostring(root)


def moved_body(keys: KeySet, url: str) -> bytes:
    """The signed Body moved into a header; a new Body with another patient in its place."""
    root = _reparse(secured(keys, url, find_documents()))
    body = root.find(ENV + "Body")
    header = root.find(ENV + "Header")
    wrapper = etree.SubElement(header, "{urn:attacker}Wrapper")
    root.remove(body)
    wrapper.append(body)
    forged = etree.SubElement(root, ENV + "Body")
    forged.append(etree.fromstring(find_documents(OTHER)))
    return etree.tostring(root)


def moved_body_same_id(keys: KeySet, url: str) -> bytes:
    """As above, but the forged Body carries the signed Body's wsu:Id (duplicate ids)."""
    root = _reparse(moved_body(keys, url))
    signed_body = root.find(ENV + "Header").find("{urn:attacker}Wrapper")[0]
    root.find(ENV + "Body").set(WSU + "Id", signed_body.get(WSU + "Id"))
    return etree.tostring(root)


def duplicated_assertion(keys: KeySet, url: str) -> bytes:
    root = _reparse(secured(keys, url, find_documents()))
    security = root.find(ENV + "Header").find(WSSE + "Security")
    token = security.find(f"{{{xa.NS_SAML}}}Assertion")
    forged = copy.deepcopy(token)
    for value in forged.iter(f"{{{xa.NS_SAML}}}AttributeValue"):
        if value.text == PATIENT:
            value.text = OTHER
    security.insert(0, forged)
    return etree.tostring(root)


def assertion_in_unknown_header(keys: KeySet, url: str) -> bytes:
    root = _reparse(secured(keys, url, find_documents()))
    header = root.find(ENV + "Header")
    security = header.find(WSSE + "Security")
    token = security.find(f"{{{xa.NS_SAML}}}Assertion")
    security.remove(token)
    etree.SubElement(header, "{urn:attacker}Tokens").append(token)
    return etree.tostring(root)


def second_security_header(keys: KeySet, url: str) -> bytes:
    root = _reparse(secured(keys, url, find_documents()))
    header = root.find(ENV + "Header")
    header.append(copy.deepcopy(header.find(WSSE + "Security")))
    return etree.tostring(root)


def signature_over_other_element(keys: KeySet, url: str) -> bytes:
    """The institution signs the Timestamp and headers, not the Body."""
    root = _reparse(secured(keys, url, find_documents()))
    security = root.find(ENV + "Header").find(WSSE + "Security")
    security.remove(security.find(DS + "Signature"))
    ids = ["#" + el.get(WSU + "Id") for el in root.iter() if el.get(WSU + "Id") and el.tag != ENV + "Body"]
    signer = XMLSigner(
        method=SignatureConstructionMethod.detached,
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=xa.EXC_C14N,
    )
    sender = keys.institutions["kommune"]
    security.append(
        signer.sign(
            root, key=sender.key_pem(), cert=sender.cert_pem().decode(), reference_uri=ids, id_attribute="Id"
        )
    )
    return etree.tostring(root)


def untrusted_signer(keys: KeySet, url: str, rogue: KeySet) -> bytes:
    return secured(keys, url, find_documents(), signer=rogue.institutions["rogue"])


def untrusted_idp(keys: KeySet, url: str, rogue: KeySet) -> bytes:
    return secured(keys, url, find_documents(), idp=rogue.institutions["rogue"])


FORGERIES: list[tuple[str, Callable[..., bytes], str]] = [
    ("unsigned when required", unsigned, "requires a signed"),
    ("tampered body", tampered_body, "signature is not valid"),
    ("moved body", moved_body, "does not cover Body"),
    ("moved body, same id", moved_body_same_id, "Ambiguous reference"),
    ("duplicated assertion", duplicated_assertion, "exactly one SAML assertion"),
    ("assertion in unknown header", assertion_in_unknown_header, "exactly one SAML assertion"),
    ("second Security header", second_security_header, "one wsse:Security"),
    ("signature over another element", signature_over_other_element, "does not cover Body"),
]


@pytest.mark.parametrize(("name", "forge", "reason"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_forgeries_are_refused(
    server: RunningServer, keys: KeySet, name: str, forge: Callable[..., bytes], reason: str
) -> None:
    url = f"{server.url}/registry"
    response = post(url, forge(keys, url))
    assert response.status_code == 400, f"{name}: {response.status_code} {response.text[:300]}"
    sub, text = fault(response)
    assert sub in ("InvalidSecurity", "FailedCheck", "FailedAuthentication", "InvalidSecurityToken"), (
        sub,
        text,
    )
    assert reason in text, text
    assert_valid_still_answered(keys, url)


@pytest.mark.parametrize("who", ["signer", "idp"])
def test_untrusted_certificates(server: RunningServer, keys: KeySet, rogue: KeySet, who: str) -> None:
    url = f"{server.url}/registry"
    forge = untrusted_signer if who == "signer" else untrusted_idp
    response = post(url, forge(keys, url, rogue))
    assert response.status_code == 400 and "signature is not valid" in fault(response)[1]
    assert_valid_still_answered(keys, url)


@pytest.mark.parametrize(
    ("kw", "reason", "subcode"),
    [
        ({"now": dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)}, "expired", "FailedAuthentication"),
        ({"now": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}, "not yet valid", "FailedAuthentication"),
        ({"audience": "someone-else"}, "meant for", "FailedAuthentication"),
        ({"issuer": "https://idp.example"}, "not trusted", "FailedAuthentication"),
        ({"attributes": attrs(resource_id="")}, "lacks required", "InvalidSecurity"),
    ],
)
def test_assertion_conditions(
    server: RunningServer, keys: KeySet, kw: dict[str, object], reason: str, subcode: str
) -> None:
    url = f"{server.url}/registry"
    response = post(url, secured(keys, url, find_documents(), **kw))
    assert response.status_code == 400
    assert fault(response)[0] == subcode and reason in fault(response)[1], fault(response)
    assert_valid_still_answered(keys, url)


def test_replay_is_refused(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    data = secured(keys, url, find_documents())
    assert post(url, data).status_code == 200
    again = post(url, data)
    assert again.status_code == 400 and "replayed" in fault(again)[1]
    assert_valid_still_answered(keys, url)


def test_asking_about_another_patient_finds_nothing(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    register(keys, url, coded(OTHER, "C00-1"), OTHER)
    assert found_ids(
        post(url, secured(keys, url, find_documents(OTHER), attributes=attrs(resource_id=OTHER)))
    )
    assert found_ids(post(url, secured(keys, url, find_documents(OTHER)))) == set()
    assert_valid_still_answered(keys, url)


def test_retrieving_another_patients_document_is_refused(
    server: RunningServer, keys: KeySet, tmp_path: Path
) -> None:
    repo_url = f"{server.url}/repository"
    repo = server.app.state.repositories["default"]
    # the other patient's document, stored through the repository with the other patient's assertion
    body = (
        f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
        + ebrim.submit_objects_request_bytes(_provide_sample(OTHER))
        + b'<xdsb:Document id="Document01">aGVsbG8=</xdsb:Document></xdsb:ProvideAndRegisterDocumentSetRequest>'
    )
    data = secured(keys, repo_url, body, v.ACTION_PROVIDE_AND_REGISTER, attributes=attrs(resource_id=OTHER))
    stored = post(repo_url, data, v.ACTION_PROVIDE_AND_REGISTER)
    assert v.RESPONSE_SUCCESS.encode() in stored.content, stored.text
    uid = etree.fromstring(body).findtext(
        f".//{{{v.NS_RIM}}}ExternalIdentifier[@identificationScheme='{v.DE_UNIQUE_ID}']"
    )
    uid = next(
        e.get("value")
        for e in etree.fromstring(body).iter(f"{{{v.NS_RIM}}}ExternalIdentifier")
        if e.get("identificationScheme") == v.DE_UNIQUE_ID
    )
    request = (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:RepositoryUniqueId>{repo.unique_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"
    ).encode()
    refused = post(repo_url, secured(keys, repo_url, request, v.ACTION_RETRIEVE), v.ACTION_RETRIEVE)
    assert refused.status_code == 200 and v.XDSDocumentUniqueIdError.encode() in refused.content
    assert b"refused by access rule 'patient'" in refused.content
    assert not refused.headers["content-type"].startswith("multipart/related")
    allowed = post(
        repo_url,
        secured(keys, repo_url, request, v.ACTION_RETRIEVE, attributes=attrs(resource_id=OTHER)),
        v.ACTION_RETRIEVE,
    )
    assert allowed.status_code == 200 and allowed.headers["content-type"].startswith("multipart/related")


def _provide_sample(patient: str):  # type: ignore[no-untyped-def]
    s = coded(patient, "E00-1")  # radiology: released for treatment
    for d in s.documents:
        d.slots = [x for x in d.slots if x.name not in ("hash", "size", "repositoryUniqueId")]
    return s.submission


def test_answers_are_signed_by_the_responding_institution(server: RunningServer, keys: KeySet) -> None:
    from xds.trust.assertion import AssertionRejected
    from xds.trust.wssecurity import verify_response

    url = f"{server.url}/registry"
    request = secured(keys, url, find_documents())
    message_id = etree.fromstring(request).findtext(f".//{{{v.NS_WSA}}}MessageID")
    response = post(url, request)
    answer = safexml.parse(response.content)
    signer = verify_response(answer, ca_pem_file=keys.ca.cert_path, relates_to=message_id)
    assert "CN=ahus" in signer.subject.rfc4514_string()
    with pytest.raises(AssertionRejected, match="RelatesTo"):
        verify_response(
            safexml.parse(response.content), ca_pem_file=keys.ca.cert_path, relates_to="urn:uuid:other"
        )
    forged = safexml.parse(response.content)
    forged.find(ENV + "Body")[0].set("status", v.RESPONSE_FAILURE)
    with pytest.raises(AssertionRejected, match="not valid"):
        verify_response(forged, ca_pem_file=keys.ca.cert_path)


class XuaPlugin:
    """A zeep plugin that puts a signed XUA assertion and the institution's signature on every request."""

    def __init__(self, keys: KeySet, attributes: xa.TrustAttributes) -> None:
        self.keys = keys
        self.attributes = attributes

    def egress(self, envelope, http_headers, operation, binding_options):  # type: ignore[no-untyped-def]
        assertion = xa.sign_assertion(
            xa.build_assertion(self.attributes, issuer=ISSUER),
            self.keys.idp.key_pem(),
            self.keys.idp.cert_pem(),
        )
        sender = self.keys.institutions["kommune"]
        data = secure_request(
            etree.tostring(envelope),
            assertion=assertion,
            key_pem=sender.key_pem(),
            cert_pem=sender.cert_pem(),
        )
        return etree.fromstring(data), http_headers

    def ingress(self, envelope, http_headers, operation):  # type: ignore[no-untyped-def]
        return envelope, http_headers


def test_zeep_with_an_assertion_plugin_is_accepted(
    server: RunningServer, keys: KeySet, registry_wsdl: str
) -> None:
    import zeep

    url = f"{server.url}/registry"
    register(keys, url, coded(PATIENT, "E00-1"))
    client = zeep.Client(
        registry_wsdl,
        plugins=[XuaPlugin(keys, attrs())],
        settings=zeep.Settings(strict=False),
    )
    service = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12", url)
    result = service["DocumentRegistry_RegistryStoredQuery"](
        ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
        AdhocQuery={
            "id": v.SQ_FIND_DOCUMENTS,
            "Slot": [
                {
                    "name": "$XDSDocumentEntryPatientId",
                    "ValueList": {"_value_1": [{"Value": f"'{PATIENT}'"}]},
                },
                {
                    "name": "$XDSDocumentEntryStatus",
                    "ValueList": {"_value_1": [{"Value": f"('{v.STATUS_APPROVED}')"}]},
                },
            ],
        },
    )
    assert result.status == v.RESPONSE_SUCCESS
    # the same client without the plugin is refused: the endpoint requires the assertion
    plain = zeep.Client(registry_wsdl, settings=zeep.Settings(strict=False))
    plain_service = plain.create_service("{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12", url)
    with pytest.raises(zeep.exceptions.Fault):
        plain_service["DocumentRegistry_RegistryStoredQuery"](
            ResponseOption={"returnType": "ObjectRef"}, AdhocQuery={"id": v.SQ_FIND_DOCUMENTS}
        )


def test_an_institution_key_cannot_issue_assertions(server: RunningServer, keys: KeySet) -> None:
    """Finding 1: an institution's certificate chains to the anchors, but issuers are pinned to their
    own certificates — an assertion it signs under an allowed issuer name is refused."""
    url = f"{server.url}/registry"
    kommune = keys.institutions["kommune"]
    response = post(
        url, secured(keys, url, find_documents(OTHER), attributes=attrs(resource_id=OTHER), idp=kommune)
    )
    assert response.status_code == 400
    sub, text = fault(response)
    assert sub == "FailedCheck" and "pinned to issuer" in text, text
    # and the identity provider's certificate gives no power as an institution (message signer)
    response = post(url, secured(keys, url, find_documents(), signer=keys.idp))
    assert response.status_code == 400 and "message signature is not valid" in fault(response)[1]
    assert_valid_still_answered(keys, url)


def test_a_signature_with_too_many_references_is_refused(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    root = _reparse(secured(keys, url, find_documents()))
    info = root.find(ENV + "Header").find(WSSE + "Security").find(DS + "Signature").find(DS + "SignedInfo")
    reference = info.find(DS + "Reference")
    for _ in range(100):
        info.append(copy.deepcopy(reference))
    response = post(url, etree.tostring(root))
    assert response.status_code == 400 and "at most 64" in fault(response)[1]
    assert_valid_still_answered(keys, url)


@pytest.mark.parametrize("where", ["SignatureValue", "DigestValue", "BinarySecurityToken"])
def test_malformed_base64_is_a_sender_fault(server: RunningServer, keys: KeySet, where: str) -> None:
    url = f"{server.url}/registry"
    root = _reparse(secured(keys, url, find_documents()))
    security = root.find(ENV + "Header").find(WSSE + "Security")
    target = (
        security.find(WSSE + where) if where == "BinarySecurityToken" else next(security.iter(DS + where))
    )
    target.text = "not*base64!"
    response = post(url, etree.tostring(root))
    assert response.status_code == 400, response.text[:300]
    assert fault(response)[0] in ("FailedCheck", "InvalidSecurityToken"), fault(response)
    assert_valid_still_answered(keys, url)
