"""HL7 v2.5 data types in XDS metadata (ITI TF-3 Table 4.2.3.1.7-2)."""

from __future__ import annotations

import pytest

from xds.metadata import hl7v2 as h


def test_cx() -> None:
    cx = h.CX.parse("13116900216^^^&2.16.578.1.12.4.1.4.1&ISO")
    assert cx.id == "13116900216" and cx.authority_oid == "2.16.578.1.12.4.1.4.1"
    assert cx.format() == "13116900216^^^&2.16.578.1.12.4.1.4.1&ISO"
    assert h.check_cx("13116900216^^^&2.16.578.1.12.4.1.4.1&ISO") == ""


@pytest.mark.parametrize(
    "value",
    [
        "",
        "^^^&1.2.3&ISO",
        "123",
        "123^^^1.2.3",
        "123^^^NS&1.2.3&ISO",
        "123^^^&1.2.3&L",
        "123^^^&abc&ISO",
        "1^x^^&1.2&ISO",
    ],
)
def test_cx_rejected(value: str) -> None:
    assert h.check_cx(value)


def test_xon_xcn_xtn() -> None:
    assert h.check_xon("Finnmarkssykehuset HF^^^^^&2.16.578.1.12.4.1.4.101&ISO^^^^983974880") == ""
    assert h.check_xon("Some Hospital") == ""
    assert h.check_xon("^^^^^^^^^1.2.3")
    assert h.check_xcn("12345^Nordmann^Kari^^^^^^&2.16.578.1.12.4.1.4.4&ISO") == ""
    assert h.check_xcn("^Nordmann") == ""
    assert h.check_xcn("^^Kari")
    assert h.check_xtn("^^Internet^kari@example.no") == ""
    assert h.check_xtn("^^Internet^not-an-address")


@pytest.mark.parametrize(
    "value", ["2026", "202611", "20261122", "2026112213", "202611221315", "20261122131500"]
)
def test_dtm_accepted(value: str) -> None:
    assert h.check_dtm(value) == ""


@pytest.mark.parametrize(
    "value", ["", "26", "2026113", "20261322", "20261132", "20261122250000", "2026-11-22", "2026112213150001"]
)
def test_dtm_rejected(value: str) -> None:
    assert h.check_dtm(value)


def test_dtm_bounds() -> None:
    assert h.dtm_bounds("2026") == ("20260101000000", "20261231235959")
    assert h.dtm_bounds("20261122") == ("20261122000000", "20261122235959")
    assert h.dtm_key("202611") == "20261101000000"


def test_unique_ids() -> None:
    assert h.is_oid("2.16.578.1.12.4.1.4.1")
    assert not h.is_oid("2.16.0578")
    assert not h.is_oid("3.1")
    assert h.is_unique_id("1.2.3^abc")
    assert not h.is_unique_id("1.2.3^" + "x" * 17)
    assert not h.is_unique_id("1." + "1" * 130)
