"""Norway's national identifiers (``../shared/profiles/norway.md``).

Fødselsnummer, D-nummer and H-nummer are 11 digits ``DDMMYYIIIKK`` with two mod-11 check digits;
a D-nummer adds 4 to the first digit, an H-nummer 4 to the third. Synthetic test persons add 40
(NHN test data) or 80 (the national test register) to the month. Organisation numbers
(Enhetsregisteret) are 9 digits with one mod-11 check digit.
"""

from __future__ import annotations

OID_FNR = "2.16.578.1.12.4.1.4.1"
OID_DNR = "2.16.578.1.12.4.1.4.2"
OID_HNR = "2.16.578.1.12.4.1.4.3"
OID_HPR = "2.16.578.1.12.4.1.4.4"
OID_ORGNR = "2.16.578.1.12.4.1.4.101"
OID_RESH = "2.16.578.1.12.4.1.4.102"
OID_HER = "2.16.578.1.12.4.1.2"
PERSON_ID_OIDS = (OID_FNR, OID_DNR, OID_HNR)

HOME_COMMUNITY_ROOT = "2.16.578.1.12.4.1.7"
NATIONAL_COMMUNITY = "2.16.578.1.12.4.1.7.1.1"
CODE_SYSTEM_PREFIX = "2.16.578.1.12.4.1.1."

_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORG = (3, 2, 7, 6, 5, 4, 3, 2)


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 check digit, or None where the rule gives 10 (no valid number)."""
    rest = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    if rest == 11:
        return 0
    return None if rest == 10 else rest


def check_digits(first_nine: str) -> str | None:
    """The two check digits that complete a person number, or None where none exist."""
    k1 = _mod11(first_nine, _K1)
    if k1 is None:
        return None
    k2 = _mod11(first_nine + str(k1), _K2)
    return None if k2 is None else f"{k1}{k2}"


def check_digits_ok(number: str) -> bool:
    """The two check digits of an 11-digit person number are right."""
    if len(number) != 11 or not number.isascii() or not number.isdigit():
        return False
    return check_digits(number[:9]) == number[9:]


def person_number_kind(number: str) -> str | None:
    """``"fnr"``, ``"dnr"`` or ``"hnr"`` for a person number with valid check digits, else None.

    The day carries +40 for a D-nummer; a month above 40 marks an H-nummer (or one of NHN's
    synthetic persons, who share that offset under the fødselsnummer OID).
    """
    if not check_digits_ok(number):
        return None
    if int(number[0:2]) > 40:
        return "dnr"
    if 40 < int(number[2:4]) < 80:
        return "hnr"
    return "fnr"


def valid_person_number(number: str, authority_oid: str) -> bool:
    """A person number with valid check digits under one of the three person-number OIDs.

    Validity is the two mod-11 check digits, as the national rules state, and a day that some
    scheme can give: 01–31, or 41–71 for a D-nummer. The month is judged only as far as every
    scheme agrees (never 00), because synthetic test persons shift it by amounts that differ
    between test registers (NHN's ``29698496140`` is one). A D-nummer OID needs the day's +40 and
    an H-nummer OID the month's +40; a D-nummer may travel under the fødselsnummer OID, as in the
    field. Without the day check ``00000000000`` — whose check digits are right — would file
    every unknown patient under one record.
    """
    if authority_oid not in PERSON_ID_OIDS or not check_digits_ok(number):
        return False
    day, month = int(number[0:2]), int(number[2:4])
    if not (1 <= day <= 31 or 41 <= day <= 71) or month == 0:
        return False
    if authority_oid == OID_DNR and day < 41:
        return False
    return not (authority_oid == OID_HNR and month < 41)


def valid_organisation_number(number: str) -> bool:
    """A 9-digit Enhetsregisteret number with its mod-11 check digit."""
    if len(number) != 9 or not number.isascii() or not number.isdigit():
        return False
    k = _mod11(number[:8], _ORG)
    return k is not None and k == int(number[8])
