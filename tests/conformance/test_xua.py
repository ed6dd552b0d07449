"""The XUA test users' assertions are what their names say, seen by the trust model's own checks.

The kit's XUA tests (reg_xua, rep_xua) ask as a test user named after the test id; the replay plays
the identity provider. Each assertion it makes is checked here with ``verify_assertion`` (signature
pinned to the issuer, SAML 2.0 assertion schema, validity window, audience, one value per attribute), so a user meant to be
refused is not quietly a valid one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.conformance.xua import USERS, XuaIdentity, test_user, user_for_section
from xds.trust import assertion as xa

S = "{" + xa.NS_SAML + "}"
PATIENT = "a1b2c3^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory, testkit: Path) -> XuaIdentity:
    return XuaIdentity.make(tmp_path_factory.mktemp("xua") / "keys", testkit)


def check(identity: XuaIdentity, user: str) -> str:
    """ "" when the trust model accepts ``user``'s assertion, else why it refuses it."""
    token = identity.assertion(user, PATIENT)
    try:
        xa.verify_assertion(  # reads the attributes too, one value each
            token, issuers={identity.issuer: [identity.keys.idp.certificate()]}, audience=identity.audience
        )
    except xa.AssertionRejected as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("expired", "expired"),
        ("notyetvalid", "not yet valid"),
        ("unsigned", "signature"),
        ("unknownaudience", "meant for"),
        ("secondrole", "more than once"),
        ("secondpurposeofuse", "more than once"),
        ("secondauthncontext", "AuthnContext"),
        ("invalidauthnstatement", "AuthnInstant"),
    ],
)
def test_users_meant_to_be_refused_are(identity: XuaIdentity, user: str, why: str) -> None:
    assert why in check(identity, user)


@pytest.mark.parametrize("user", ["valid", "withauthzconsent"])
def test_valid_users_are_accepted(identity: XuaIdentity, user: str) -> None:
    assert check(identity, user) == ""


def test_authn_statement_users_break_saml_core(identity: XuaIdentity) -> None:
    """SAML 2.0 Core §2.7.2: an AuthnStatement has one AuthnInstant and one AuthnContext."""
    second = identity.assertion("secondauthncontext", PATIENT).find(S + "AuthnStatement")
    assert second is not None and len(second.findall(S + "AuthnContext")) == 2
    invalid = identity.assertion("invalidauthnstatement", PATIENT).find(S + "AuthnStatement")
    assert invalid is not None and invalid.get("AuthnInstant") is None


def test_the_user_comes_from_the_test_id() -> None:
    assert test_user("11990_expired", ("reg_xua",)) == "expired"
    assert test_user("11990eval_valid", ("reg_xua",)) == "valid"
    assert test_user("11990", ("reg", "R.b")) is None
    assert set(USERS) >= {"valid", "expired", "unsigned"}
    assert user_for_section("expired", "eval") == "valid"
    assert user_for_section("expired", "submit") == "expired"


def test_the_kit_s_class_codes_are_readable_in_the_xua_deployment(identity: XuaIdentity) -> None:
    assert {"REPORTS", "History and Physical"} <= identity.readable_classes
