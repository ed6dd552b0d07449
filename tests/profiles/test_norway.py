"""Norwegian national identifiers (shared/profiles/norway.md) and the profile's patient-id rule."""

from __future__ import annotations

import random

import pytest

from xds import samples
from xds.profiles import get_profile, norway

FNR = norway.OID_FNR


@pytest.mark.parametrize("number", ["13116900216", "29698496140"])
def test_known_valid_numbers(number: str) -> None:
    assert norway.check_digits_ok(number)
    assert norway.valid_person_number(number, FNR)


@pytest.mark.parametrize(
    "number", ["13116900217", "13116900226", "1311690021", "131169002160", "1311690021a", "１３116900216"]
)
def test_malformed_numbers(number: str) -> None:
    assert not norway.valid_person_number(number, FNR)


def test_every_single_digit_typo_is_caught() -> None:
    number = "13116900216"
    for i in range(11):
        for d in "0123456789":
            if d != number[i]:
                typo = number[:i] + d + number[i + 1 :]
                assert not norway.check_digits_ok(typo), typo


def test_kinds() -> None:
    assert norway.person_number_kind("13116900216") == "fnr"
    dnr = next(n for n in (f"53116900{i:03d}" for i in range(1000)) if norway.check_digits_ok(n))
    assert norway.person_number_kind(dnr) == "dnr"
    assert norway.person_number_kind("29698496140") == "hnr"


def test_synthetic_sample_numbers_are_valid() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert norway.valid_person_number(samples.person_number(rng), FNR)


def test_organisation_numbers() -> None:
    assert norway.valid_organisation_number("983974880")
    assert not norway.valid_organisation_number("983974881")
    assert not norway.valid_organisation_number("98397488")


def test_profiles() -> None:
    nor = get_profile(None)
    assert nor.name == "norway"
    assert nor.patient_id_status("13116900216", FNR) == "valid"
    assert nor.patient_id_status("13116900217", norway.OID_DNR) == "malformed"
    assert nor.patient_id_status("13116900216", "1.2.3") == "not-national"
    assert get_profile("none").patient_id_status("13116900216", FNR) == "not-national"
    with pytest.raises(ValueError):
        get_profile("sweden")


def _with_check_digits(first_nine: str) -> str:
    """``first_nine`` with the first serial (digits 7–9) from it on that has check digits."""
    head, serial = first_nine[:6], int(first_nine[6:9])
    for i in range(serial, serial + 1000):
        candidate = f"{head}{i % 1000:03d}"
        digits = norway.check_digits(candidate)
        if digits is not None:
            return candidate + digits
    raise AssertionError("no check digits")


@pytest.mark.parametrize(
    ("first_nine", "oid"),
    [
        ("000000000", FNR),  # right check digits, no person: would pool every unknown patient
        ("001169000", FNR),  # day 00
        ("321169000", FNR),  # day 32
        ("991169000", FNR),  # day 99
        ("130069000", FNR),  # month 00
        ("131169000", norway.OID_DNR),  # a D-nummer without the day's +40
        ("131169000", norway.OID_HNR),  # an H-nummer without the month's +40
    ],
)
def test_person_numbers_no_scheme_can_give_are_refused(first_nine: str, oid: str) -> None:
    number = _with_check_digits(first_nine)
    assert norway.check_digits_ok(number)
    assert not norway.valid_person_number(number, oid)


@pytest.mark.parametrize(
    ("first_nine", "oid"),
    [
        ("531169000", norway.OID_DNR),
        ("531169000", FNR),  # D-numbers travel under the fødselsnummer OID in the field
        ("135169000", norway.OID_HNR),
        ("139169000", FNR),  # synthetic persons: month + 80
        ("311269000", FNR),
    ],
)
def test_person_numbers_of_each_scheme_are_accepted(first_nine: str, oid: str) -> None:
    assert norway.valid_person_number(_with_check_digits(first_nine), oid)
