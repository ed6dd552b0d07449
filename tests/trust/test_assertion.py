"""XUA assertions: signed ones are believed only for what the signature covers (ITI TF-2 §3.40)."""

from __future__ import annotations

import copy
import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from lxml import etree

from xds import safexml
from xds.trust import assertion as xa
from xds.trust.keys import KeySet, init_keys

ISSUER = "https://helseid-xdssaml.test.nhn.no"
PATIENT = "13116900216^^^&2.16.578.1.12.4.1.4.1&ISO"
S = f"{{{xa.NS_SAML}}}"


def attrs(**over: str) -> xa.TrustAttributes:
    base = dict(
        subject_id="Kari Nordmann",
        hpr_number="9144900",
        role="LE",
        organisation="Akershus universitetssykehus HF",
        organisation_id="983971636",
        purpose_of_use="TREAT",
        healthcare_service="S03",
        resource_id=PATIENT,
    )
    base.update(over)
    return xa.TrustAttributes(**base)  # type: ignore[arg-type]


def signed(keys: KeySet, *, signer: object = None, **kw: object) -> etree._Element:
    who = signer or keys.idp
    el = xa.build_assertion(kw.pop("attributes", attrs()), issuer=kw.pop("issuer", ISSUER), **kw)  # type: ignore[arg-type]
    out = xa.sign_assertion(el, who.key_pem(), who.cert_pem())  # type: ignore[attr-defined]
    return safexml.parse(etree.tostring(out))  # as it arrives: bytes, parsed again


def verify(keys: KeySet, el: etree._Element, **kw: object) -> xa.VerifiedAssertion:
    pinned = {ISSUER: [keys.idp.certificate()]}
    return xa.verify_assertion(el, issuers=pinned, **kw)  # type: ignore[arg-type]


def test_keys_are_private_and_chain_to_the_ca(keys: KeySet) -> None:
    for ident in (keys.ca, keys.idp, *keys.institutions.values()):
        assert stat.S_IMODE(os.stat(ident.key_path).st_mode) == 0o600
        assert b"PRIVATE KEY" in ident.key_pem() and b"PRIVATE" not in ident.cert_pem()
    ca = keys.ca.certificate()
    for ident in keys.institutions.values():
        ident.certificate().verify_directly_issued_by(ca)
    # the identity provider's certificate is its own, vouched for by no institution's CA
    idp = keys.idp.certificate()
    idp.verify_directly_issued_by(idp)


def test_valid_assertion(keys: KeySet) -> None:
    result = verify(keys, signed(keys))
    assert result.issuer == ISSUER and result.attributes.resource_id == PATIENT
    assert result.attributes.hpr_number == "9144900" and result.attributes.purpose_of_use == "TREAT"
    assert "CN=idp" in result.signer.subject.rfc4514_string()


def test_signature_sits_after_issuer(keys: KeySet) -> None:
    el = signed(keys)
    assert [etree.QName(c).localname for c in el][:2] == ["Issuer", "Signature"]


def test_tampered_attribute_fails(keys: KeySet) -> None:
    el = signed(keys)
    for value in el.iter(S + "AttributeValue"):
        if value.text == PATIENT:
            value.text = "29698496140^^^&2.16.578.1.12.4.1.4.1&ISO"
    with pytest.raises(xa.AssertionRejected, match="signature"):
        verify(keys, el)


def test_untrusted_signer_fails(keys: KeySet, rogue: KeySet) -> None:
    with pytest.raises(xa.AssertionRejected, match="signature"):
        verify(keys, signed(keys, signer=rogue.institutions["rogue"]))


def test_wrapped_assertion_is_read_from_what_was_signed(keys: KeySet) -> None:
    """A forged assertion with the signed one hidden inside (same ID) is never believed."""
    genuine = signed(keys)
    forged = copy.deepcopy(genuine)
    for value in forged.iter(S + "AttributeValue"):
        if value.text == PATIENT:
            value.text = "29698496140^^^&2.16.578.1.12.4.1.4.1&ISO"
    forged.remove(forged.find(f"{{{xa.NS_DS}}}Signature"))
    advice = etree.SubElement(forged, S + "Advice")
    advice.append(genuine)
    forged = safexml.parse(etree.tostring(forged))
    try:
        result = verify(keys, forged)
    except xa.AssertionRejected:
        return
    assert result.attributes.resource_id == PATIENT  # the signed content, not the forgery


def test_signature_over_a_part_only_fails(keys: KeySet) -> None:
    el = xa.build_assertion(attrs(), issuer=ISSUER)
    subject = el.find(S + "Subject")
    subject.set("ID", "_subject")
    signer = xa.XMLSigner(
        signature_algorithm="rsa-sha256", digest_algorithm="sha256", c14n_algorithm=xa.EXC_C14N
    )
    out = signer.sign(
        el,
        key=keys.idp.key_pem(),
        cert=keys.idp.cert_pem().decode(),
        reference_uri="#_subject",
        id_attribute="ID",
    )
    with pytest.raises(xa.AssertionRejected):
        verify(keys, safexml.parse(etree.tostring(out)))


@pytest.mark.parametrize(
    ("shift", "reason"), [(dt.timedelta(minutes=10), "expired"), (dt.timedelta(minutes=-10), "not yet valid")]
)
def test_validity_window(keys: KeySet, shift: dt.timedelta, reason: str) -> None:
    el = signed(keys)
    with pytest.raises(xa.AssertionRejected, match=reason):
        verify(keys, el, now=dt.datetime.now(dt.UTC) + shift)
    verify(keys, el, now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))  # within the skew


def test_wrong_audience_and_unknown_issuer(keys: KeySet) -> None:
    with pytest.raises(xa.AssertionRejected, match="meant for"):
        verify(keys, signed(keys, audience="someone-else"))
    with pytest.raises(xa.AssertionRejected, match="not trusted"):
        verify(keys, signed(keys, issuer="https://evil.example"))


def test_missing_attributes_and_any_purpose(keys: KeySet) -> None:
    with pytest.raises(xa.AssertionRejected, match="lacks required"):
        verify(keys, signed(keys, attributes=attrs(resource_id="")))
    # which purposes of use may do what is the access policy's to decide (xds.trust.policy): a
    # citizen's PATRQT is verified like any other
    verified = verify(keys, signed(keys, attributes=attrs(purpose_of_use="PATRQT")))
    assert verified.attributes.purpose_of_use == "PATRQT"


def test_not_an_assertion(keys: KeySet) -> None:
    with pytest.raises(xa.AssertionRejected):
        verify(keys, etree.fromstring(b"<Assertion/>"))


def test_keys_cli(tmp_path: Path) -> None:
    from xds.cli import main

    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--institution", "ahus"]) == 0
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == ["ahus.key", "ahus.pem", "ca.key", "ca.pem", "idp.key", "idp.pem"]


def test_ecdsa_keys_sign_and_verify(tmp_path: Path) -> None:
    from xds.soap.envelope import build_request
    from xds.trust.wssecurity import secure_request, verify_request

    ec_keys = init_keys(tmp_path / "ec", ["kommune"], algorithm="ec")
    el = xa.sign_assertion(
        xa.build_assertion(attrs(), issuer=ISSUER), ec_keys.idp.key_pem(), ec_keys.idp.cert_pem()
    )
    assert b"ecdsa-sha256" in etree.tostring(el)
    env, _ = build_request("urn:ihe:iti:2007:RegistryStoredQuery", b"<x/>", to="http://127.0.0.1/registry")
    sender = ec_keys.institutions["kommune"]
    data = secure_request(env, assertion=el, key_pem=sender.key_pem(), cert_pem=sender.cert_pem())
    from xds.trust.keys import TrustAnchors
    from xds.trust.wssecurity import TrustRoles

    trust = TrustRoles(TrustAnchors([str(ec_keys.ca.cert_path)]), {ISSUER: [ec_keys.idp.certificate()]})
    ctx = verify_request(safexml.parse(data), trust=trust)
    assert ctx.assertion.attributes.resource_id == PATIENT and ctx.payload.tag == "x"


def test_keys_init_prints_configuration_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed lines configure the roles apart: the IdP pinned as an issuer, the CA for institutions."""
    import tomllib

    from xds.cli import main
    from xds.config import Config

    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--institution", "ahus"]) == 0
    out = capsys.readouterr().out
    text = out[out.index("[server]") :]
    cfg = Config.from_dict(tomllib.loads(text))
    assert cfg.trust.mode == "required" and cfg.trust.ca_file.endswith("ca.pem")
    assert [(i.name, Path(i.cert).name) for i in cfg.issuers] == [("https://idp.xds.invalid", "idp.pem")]
    assert cfg.trust.sign_key.endswith("ahus.key") and cfg.server.tls_ca.endswith("ca.pem")
