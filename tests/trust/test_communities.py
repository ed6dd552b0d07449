"""The communities directory: each known community brings its own trust anchors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support import RunningServer, make_config, require_trust

from xds import samples
from xds.config import CommunityConfig, IssuerConfig, load
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.trust import assertion as xa
from xds.trust.keys import KeySet
from xds.trust.wssecurity import secure_request

ISSUER = "https://helseid-xdssaml.test.nhn.no"
VEST_IDP = "https://idp.helse-vest.invalid"
PATIENT = samples.patient_cx("13116900216")


def query(url: str, signer_keys: KeySet, institution: str, issuer: str = ISSUER) -> httpx.Response:
    body = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{PATIENT.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()
    env, ctype = build_request(v.ACTION_STORED_QUERY, body, to=url)
    attrs = xa.TrustAttributes(subject_id="Ola", organisation_id="974795787", resource_id=PATIENT)
    token = xa.sign_assertion(
        xa.build_assertion(attrs, issuer=issuer), signer_keys.idp.key_pem(), signer_keys.idp.cert_pem()
    )
    sender = signer_keys.institutions[institution]
    data = secure_request(env, assertion=token, key_pem=sender.key_pem(), cert_pem=sender.cert_pem())
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


@pytest.mark.parametrize("known", [False, True])
def test_a_known_community_is_trusted(
    tmp_path: Path, database_url: str, keys: KeySet, rogue: KeySet, known: bool
) -> None:
    cfg = make_config(tmp_path / "data", database_url)
    require_trust(cfg, keys, ISSUER)
    if known:
        cfg.communities = [
            CommunityConfig("urn:oid:2.16.578.1.12.4.1.7.2", "Helse Vest", ca_file=str(rogue.ca.cert_path))
        ]
        # its identity provider is pinned on its own: a community's CA vouches for institutions only
        cfg.issuers.append(IssuerConfig(VEST_IDP, str(rogue.idp.cert_path)))
    with RunningServer(cfg) as server:
        url = f"{server.url}/registry"
        assert query(url, keys, "kommune").status_code == 200  # our own community, always
        answer = query(url, rogue, "rogue", VEST_IDP)
        assert answer.status_code == (200 if known else 400), answer.text[:300]


def test_communities_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "xds.toml"
    path.write_text(
        """
[trust]
mode = "required"
ca_file = "own.pem"

[[community]]
home_community_id = "urn:oid:2.16.578.1.12.4.1.7.1.1"
name = "Nasjonal"
registry_url = "https://nasjonal.example/registry"
ca_file = "national.pem"
"""
    )
    cfg = load(path, environ={})
    assert cfg.communities[0].name == "Nasjonal"
    assert cfg.trust_anchor_files() == ["own.pem", "national.pem"]
    path.write_text('[[community]]\nhome_community_id = "2.16.578"\n')
    with pytest.raises(ValueError, match="urn:oid"):
        load(path, environ={})


def test_access_policy_from_configuration(tmp_path: Path) -> None:
    from xds.trust.policy import ObjectFacts, Requester

    path = tmp_path / "xds.toml"
    path.write_text(
        '[trust]\ncitizen_purposes = "PATRQT, SELF"\n'
        '[[trust.rule]]\nname = "gp-read"\npurposes = ["TREAT"]\nactions = ["read"]\n'
        'roles = ["LE"]\nclasses = ["C00-1", "A00-1"]\nrefuse_confidentiality = ["NORS", "X"]\n'
    )
    policy = load(path, environ={}).access_policy()
    assert policy.citizen_purposes == {"PATRQT", "SELF"}
    who = Requester(
        xa.TrustAttributes(
            subject_id="Kari", role="LE", organisation_id="1", purpose_of_use="TREAT", resource_id=PATIENT
        ),
        PATIENT,
    )

    def doc(cls: str, conf: str = "N") -> ObjectFacts:
        return ObjectFacts(
            "document", PATIENT, f"{cls}^^2.16.578.1.12.4.1.1.9602", (f"{conf}^^2.16.578.1.12.4.1.1.9603",)
        )

    assert policy.decide(who, doc("A00-1"))
    assert policy.decide(who, doc("E00-1")).rule == "gp-read"
    assert not policy.decide(who, doc("E00-1"))
    assert not policy.decide(who, doc("C00-1", "X"))
    btg = Requester(xa.TrustAttributes(**{**who.attributes.__dict__, "purpose_of_use": "BTG"}), PATIENT)
    assert policy.decide(btg, doc("C00-1")).rule == "no-rule"
    # the built-in table with another citizen purpose: SELF is a citizen, read by the citizens' rule
    path.write_text('[trust]\ncitizen_purposes = "SELF"\n')
    policy = load(path, environ={}).access_policy()
    number = PATIENT.split("^")[0]
    for purpose, rule in (("SELF", "citizen-own-record"), ("PATRQT", "no-rule")):
        citizen = Requester(
            xa.TrustAttributes(
                subject_id=number, organisation_id="1", purpose_of_use=purpose, resource_id=PATIENT
            ),
            PATIENT,
        )
        decision = policy.decide(citizen, doc("A00-1"))
        assert decision.rule == rule and decision.allowed == (purpose == "SELF")
    path.write_text('[[trust.rule]]\nname = "x"\nactions = ["peek"]\n')
    with pytest.raises(ValueError, match="unknown actions"):
        load(path, environ={}).access_policy()


def test_mode_per_endpoint(tmp_path: Path, database_url: str, keys: KeySet) -> None:
    """Registry required, repositories off: an unsigned query is refused, an unsigned retrieve answered."""
    cfg = make_config(tmp_path / "data", database_url)
    cfg.trust.mode = "required"
    cfg.trust.repository_mode = "off"
    cfg.trust.ca_file = str(keys.ca.cert_path)
    cfg.issuers = [IssuerConfig(ISSUER, str(keys.idp.cert_path))]
    with RunningServer(cfg) as server:
        data, ctype = build_request(v.ACTION_STORED_QUERY, b"<x/>", to=f"{server.url}/registry")
        refused = httpx.post(f"{server.url}/registry", content=data, headers={"Content-Type": ctype})
        assert refused.status_code == 400 and b"requires a signed" in refused.content
        request = (
            f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>'
            f"<xdsb:RepositoryUniqueId>1.2.3</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>1.2.3.4</xdsb:DocumentUniqueId>"
            f"</xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"
        ).encode()
        data, ctype = build_request(v.ACTION_RETRIEVE, request, to=f"{server.url}/repository")
        answered = httpx.post(f"{server.url}/repository", content=data, headers={"Content-Type": ctype})
        assert answered.status_code == 200 and v.XDSUnknownRepositoryId.encode() in answered.content
