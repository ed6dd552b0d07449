"""ITI-8 Patient Identity Feed messages and their HL7 v2.5 ACKs (ITI TF-2 §3.8)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, select

from xds.profiles import get_profile
from xds.registry.patients import PatientDirectory
from xds.registry.pix_feed import STANDARD as STD
from xds.registry.pix_feed import escape, handle_message, unescape
from xds.registry.schema import patients

NO = "2.16.578.1.12.4.1.4.1"  # Norwegian fødselsnummer
LOCAL = "1.2.3.4.5"
VALID = "13116900216"
MALFORMED = "13116900217"

NORWAY = get_profile("norway")


def msh(trigger: str = "A04", structure: str = "ADT_A01", control: str = "CTRL1", **kw: str) -> str:
    mtype = kw.get("mtype", f"ADT^{trigger}^{structure}")
    return f"MSH|^~\\&|SENDAPP|SENDFAC|XDS|XDSFAC|20261122101500||{mtype}|{control}|{kw.get('pid', 'P')}|2.5"


def message(*segments: str, sep: str = "\r") -> bytes:
    return sep.join(segments).encode("utf-8")


def parse_ack(ack: str) -> dict[str, list[str]]:
    assert "\n" not in ack
    segs = {}
    for line in ack.split("\r"):
        fields = line.split("|")
        segs[fields[0]] = fields
    return segs


@pytest.fixture
def directory(engine: Engine) -> PatientDirectory:
    return PatientDirectory(engine)


def _row(engine: Engine, pid: str):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(patients).where(patients.c.pid == pid)).first()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(patients.c.pid)).all())


# --- registrations ------------------------------------------------------------------------------------
@pytest.mark.parametrize("trigger", ["A01", "A04", "A05", "A08"])
def test_register_triggers(trigger: str, directory: PatientDirectory, engine: Engine) -> None:
    ack = handle_message(
        message(
            msh(trigger),
            f"EVN|{trigger}|20261122101500",
            f"PID|||P{trigger}^^^&{LOCAL}&ISO||Nordmann^Kari||19800101123000|F",
            "PV1||O",
        ),
        directory,
        NORWAY,
    )
    segs = parse_ack(ack)
    assert segs["MSA"][:3] == ["MSA", "AA", "CTRL1"]
    assert "ERR" not in segs
    head = segs["MSH"]
    assert head[1] == "^~\\&"
    assert head[2:6] == ["XDS", "XDSFAC", "SENDAPP", "SENDFAC"]
    assert len(head[6]) == 14 and head[6].isdigit()
    assert head[8] == f"ACK^{trigger}^ACK"
    assert head[9] and head[9] != "CTRL1"
    assert head[10:12] == ["P", "2.5"]
    pid = f"P{trigger}^^^&{LOCAL}&ISO"
    assert directory.resolve(pid) == pid
    row = _row(engine, pid)
    assert (row.family_name, row.given_name, row.birth_date, row.sex) == ("Nordmann", "Kari", "19800101", "F")


def test_conformance_runner_message(directory: PatientDirectory) -> None:
    """The exact shape xds/conformance/runner.py sends, with \\n separators this time."""
    ack = handle_message(
        message(
            "MSH|^~\\&|NIST|NIST|XDS|XDS|20261122101500||ADT^A04^ADT_A01|abc123|P|2.5",
            "EVN|A04|20261122101500",
            f"PID|||{VALID}^^^&{NO}&ISO||Conformance^Patient||19700101|M",
            "PV1||O",
            sep="\n",
        ),
        directory,
        NORWAY,
    )
    assert "MSA|AA|abc123" in ack
    assert directory.is_known(f"{VALID}^^^&{NO}&ISO")


def test_every_iso_repetition_is_registered(directory: PatientDirectory) -> None:
    ack = handle_message(
        message(
            msh("A01"),
            f"PID|||MRN1^^^HOSP^MR~{VALID}^^^NO&{NO}&ISO^NNNOR~X7^^^&{LOCAL}&ISO^PI~Y8^^^&notanoid&ISO||N^K",
        ),
        directory,
        NORWAY,
    )
    assert "MSA|AA|" in ack
    assert directory.resolve(f"{VALID}^^^&{NO}&ISO") == f"{VALID}^^^&{NO}&ISO"
    assert directory.is_known(f"X7^^^&{LOCAL}&ISO")
    assert not directory.is_known("MRN1^^^&HOSP&ISO")


def test_trigger_from_evn_when_msh9_has_none(directory: PatientDirectory) -> None:
    ack = handle_message(
        message(msh(mtype="ADT"), "EVN|A08|20261122", f"PID|||E1^^^&{LOCAL}&ISO||N^K"), directory, NORWAY
    )
    assert parse_ack(ack)["MSH"][8] == "ACK^A08^ACK"
    assert "MSA|AA|" in ack
    assert directory.is_known(f"E1^^^&{LOCAL}&ISO")


def test_a08_updates_demographics(directory: PatientDirectory, engine: Engine) -> None:
    pid = f"U1^^^&{LOCAL}&ISO"
    handle_message(message(msh("A04"), f"PID|||{pid}||Old^Name||19800101|F"), directory, NORWAY)
    handle_message(message(msh("A08"), f'PID|||{pid}||New||""'), directory, NORWAY)
    row = _row(engine, pid)
    assert (row.family_name, row.given_name, row.birth_date, row.sex) == ("New", "Name", "", "F")


def test_escaped_and_custom_delimiters(directory: PatientDirectory, engine: Engine) -> None:
    raw = message(
        "MSH#$*@!#SEND$A!B#FAC#XDS#XDS#20261122##ADT$A04#C|1#P#2.5",
        f"PID###Z9$$$!{LOCAL}!ISO##O&Hara@T@x!y$Kari##19800101#F",
    )
    # component $, repetition *, escape @, subcomponent !: "&" and "|" are plain data here
    ack = handle_message(raw, directory, NORWAY)
    segs = parse_ack(ack)
    assert segs["MSA"][1] == "AA"
    assert segs["MSA"][2] == "C\\F\\1"  # the control id "C|1", re-encoded under |^~\&
    assert segs["MSH"][4] == "SEND^A&B"
    assert _row(engine, f"Z9^^^&{LOCAL}&ISO").family_name == "O&Hara!x"


def test_latin1_message(directory: PatientDirectory, engine: Engine) -> None:
    raw = f"{msh('A04')}\rPID|||L1^^^&{LOCAL}&ISO||Ærø^Øystein".encode("latin-1")
    assert "MSA|AA|" in handle_message(raw, directory, NORWAY)
    assert _row(engine, f"L1^^^&{LOCAL}&ISO").family_name == "Ærø"


# --- A40 merge ------------------------------------------------------------------------------------------
def test_a40_merge_then_resolve(directory: PatientDirectory) -> None:
    old = f"OLD1^^^&{LOCAL}&ISO"
    new = f"NEW1^^^&{LOCAL}&ISO"
    handle_message(message(msh("A04"), f"PID|||{old}||N^K"), directory, NORWAY)
    ack = handle_message(
        message(msh("A40", "ADT_A39", "M1"), "EVN|A40|20261122", f"PID|||{new}||N^K", f"MRG|{old}"),
        directory,
        NORWAY,
    )
    segs = parse_ack(ack)
    assert segs["MSA"][:3] == ["MSA", "AA", "M1"]
    assert segs["MSH"][8] == "ACK^A40^ACK"
    assert directory.resolve(old) == new
    assert directory.resolve(new) == new


def test_a40_several_subsumed_and_authorities(directory: PatientDirectory) -> None:
    survivor_local = f"S1^^^&{LOCAL}&ISO"
    survivor_no = f"{VALID}^^^&{NO}&ISO"
    ack = handle_message(
        message(
            msh("A40", "ADT_A39"),
            f"PID|||{survivor_local}~{survivor_no}",
            f"MRG|M1^^^&{LOCAL}&ISO~M2^^^&{LOCAL}&ISO~M3^^^&2.9.9&ISO",
        ),
        directory,
        NORWAY,
    )
    assert "MSA|AA|" in ack
    assert directory.resolve(f"M1^^^&{LOCAL}&ISO") == survivor_local
    assert directory.resolve(f"M2^^^&{LOCAL}&ISO") == survivor_local
    assert directory.resolve("M3^^^&2.9.9&ISO") == survivor_local  # no same-authority survivor: the first


def test_a40_chain(directory: PatientDirectory) -> None:
    a, b, c = (f"{x}^^^&{LOCAL}&ISO" for x in "ABC")
    handle_message(message(msh("A40", "ADT_A39"), f"PID|||{b}", f"MRG|{a}"), directory, NORWAY)
    handle_message(message(msh("A40", "ADT_A39"), f"PID|||{c}", f"MRG|{b}"), directory, NORWAY)
    assert directory.resolve(a) == c


def test_a40_cycle_and_self_merge_are_ae(directory: PatientDirectory) -> None:
    a, b = f"A^^^&{LOCAL}&ISO", f"B^^^&{LOCAL}&ISO"
    handle_message(message(msh("A40", "ADT_A39"), f"PID|||{b}", f"MRG|{a}"), directory, NORWAY)
    cycle = parse_ack(
        handle_message(message(msh("A40", "ADT_A39"), f"PID|||{a}", f"MRG|{b}"), directory, NORWAY)
    )
    assert cycle["MSA"][1] == "AE"
    assert cycle["ERR"][3].startswith("207^")
    same = parse_ack(
        handle_message(message(msh("A40", "ADT_A39"), f"PID|||{a}", f"MRG|{a}"), directory, NORWAY)
    )
    assert same["MSA"][1] == "AE"
    assert directory.resolve(a) == b and directory.resolve(b) == b


def test_an_a40_whose_later_group_fails_applies_none_of_its_merges(directory: PatientDirectory) -> None:
    """An AE means the message was not applied (HL7 v2.5 §2.9.2): the groups of one A40 are
    judged in order, each after the ones before it, and stored together or not at all. The ERR
    points at the group that failed."""
    p, q, r = (f"{x}^^^&{LOCAL}&ISO" for x in "PQR")
    cycle = parse_ack(
        handle_message(
            message(msh("A40", "ADT_A39"), f"PID|||{q}", f"MRG|{p}", f"PID|||{p}", f"MRG|{q}"),
            directory,
            NORWAY,
        )
    )
    assert cycle["MSA"][1] == "AE" and cycle["ERR"][2] == "MRG^2^1"
    assert directory.resolve(p) is None and directory.resolve(q) is None  # nothing stored
    chain = parse_ack(
        handle_message(
            message(msh("A40", "ADT_A39"), f"PID|||{q}", f"MRG|{p}", f"PID|||{r}", f"MRG|{q}"),
            directory,
            NORWAY,
        )
    )
    assert chain["MSA"][1] == "AA"
    assert directory.resolve(p) == r and directory.resolve(q) == r


def test_every_identifier_of_a_registration_is_stored_together(directory: PatientDirectory) -> None:
    ids = "~".join(f"ID{i}^^^&{LOCAL}&ISO" for i in range(200))
    assert "MSA|AA|" in handle_message(message(msh("A04"), f"PID|||{ids}||N^K"), directory, NORWAY)
    assert all(directory.resolve(f"ID{i}^^^&{LOCAL}&ISO") for i in range(200))


def test_a40_without_mrg_is_ae(directory: PatientDirectory, engine: Engine) -> None:
    segs = parse_ack(
        handle_message(message(msh("A40", "ADT_A39"), f"PID|||N^^^&{LOCAL}&ISO"), directory, NORWAY)
    )
    assert segs["MSA"][1] == "AE"
    assert segs["ERR"][3].startswith("100^")
    assert _count(engine) == 0


def test_a40_mrg_without_iso_identifier_is_ae(directory: PatientDirectory, engine: Engine) -> None:
    segs = parse_ack(
        handle_message(
            message(msh("A40", "ADT_A39"), f"PID|||N^^^&{LOCAL}&ISO", "MRG|X^^^HOSP"), directory, NORWAY
        )
    )
    assert segs["MSA"][1] == "AE"
    assert segs["ERR"][2] == "MRG^1^1"
    assert segs["ERR"][3].startswith("101^")
    assert _count(engine) == 0


# --- application errors (AE) ----------------------------------------------------------------------------
def test_malformed_national_id_in_pid3_is_ae_and_stores_nothing(
    directory: PatientDirectory, engine: Engine
) -> None:
    ack = handle_message(
        message(msh("A04", control="BAD1"), f"PID|||OK1^^^&{LOCAL}&ISO~{MALFORMED}^^^&{NO}&ISO||N^K"),
        directory,
        NORWAY,
    )
    segs = parse_ack(ack)
    assert segs["MSA"][1:3] == ["AE", "BAD1"]
    assert MALFORMED in segs["MSA"][3]
    assert segs["ERR"][1] == ""
    assert segs["ERR"][2] == "PID^1^3^2"
    assert segs["ERR"][3] == "102^Data type error^HL70357"
    assert segs["ERR"][4] == "E"
    assert MALFORMED in segs["ERR"][8]
    assert _count(engine) == 0


def test_malformed_national_id_in_mrg_is_ae(directory: PatientDirectory, engine: Engine) -> None:
    ack = handle_message(
        message(msh("A40", "ADT_A39"), f"PID|||{VALID}^^^&{NO}&ISO", f"MRG|{MALFORMED}^^^&{NO}&ISO"),
        directory,
        NORWAY,
    )
    segs = parse_ack(ack)
    assert segs["MSA"][1] == "AE"
    assert segs["ERR"][2] == "MRG^1^1^1"
    assert _count(engine) == 0


def test_malformed_national_id_accepted_without_profile(directory: PatientDirectory) -> None:
    ack = handle_message(
        message(msh("A04"), f"PID|||{MALFORMED}^^^&{NO}&ISO"), directory, get_profile("none")
    )
    assert "MSA|AA|" in ack


def test_pid3_without_iso_authority_is_ae(directory: PatientDirectory) -> None:
    segs = parse_ack(handle_message(message(msh("A04"), "PID|||MRN1^^^HOSP^MR||N^K"), directory, NORWAY))
    assert segs["MSA"][1] == "AE"
    assert segs["ERR"][2] == "PID^1^3"
    assert segs["ERR"][3].startswith("101^")


def test_missing_pid_segment_is_ae(directory: PatientDirectory) -> None:
    segs = parse_ack(handle_message(message(msh("A04"), "EVN|A04"), directory, NORWAY))
    assert segs["MSA"][1] == "AE"
    assert segs["ERR"][3].startswith("100^")


def test_unexpected_failure_is_generic_ae(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(PatientDirectory):
        def __init__(self) -> None:
            pass

        def register_all(self, pids: object, **kw: str | None) -> None:
            raise RuntimeError("database on fire")

    with caplog.at_level(logging.ERROR, logger="xds.feed"):
        ack = handle_message(message(msh("A04", control="X1"), f"PID|||I^^^&{LOCAL}&ISO"), Broken(), NORWAY)
    segs = parse_ack(ack)
    assert segs["MSA"][1:3] == ["AE", "X1"]
    assert "on fire" not in ack
    assert segs["ERR"][3].startswith("207^")
    assert any("database on fire" in (r.exc_text or "") for r in caplog.records)


# --- rejections (AR) ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "code"),
    [
        (msh(mtype="ORU^R01^ORU_R01"), "200^"),
        (msh("A03"), "201^"),
        (msh(mtype="ADT^A31"), "201^"),
    ],
)
def test_unsupported_message_is_ar(
    header: str, code: str, directory: PatientDirectory, engine: Engine
) -> None:
    segs = parse_ack(handle_message(message(header, f"PID|||R^^^&{LOCAL}&ISO"), directory, NORWAY))
    assert segs["MSA"][1:3] == ["AR", "CTRL1"]
    assert segs["ERR"][3].startswith(code)
    assert _count(engine) == 0


@pytest.mark.parametrize("raw", [b"", b"\r\n", b"PID|||x^^^&1.2.3&ISO", b"garbage \x00\xff"])
def test_no_msh_is_ar_100(raw: bytes, directory: PatientDirectory) -> None:
    segs = parse_ack(handle_message(raw, directory, NORWAY))
    assert segs["MSA"][:3] == ["MSA", "AR", ""]
    assert segs["ERR"][2] == "MSH"
    assert segs["ERR"][3].startswith("100^")
    assert segs["MSH"][8] == "ACK"


@pytest.mark.parametrize("raw", [b"MSH", b"MSHA^~\\&|x", b"MSH|^^\\&|A|B|C|D|1||ADT^A04|1|P|2.5"])
def test_unusable_delimiters_is_ar(raw: bytes, directory: PatientDirectory) -> None:
    segs = parse_ack(handle_message(raw, directory, NORWAY))
    assert segs["MSA"][1] == "AR"


def test_missing_control_id_is_ar(directory: PatientDirectory) -> None:
    segs = parse_ack(
        handle_message(message(msh("A04", control=""), "PID|||I^^^&1.2.3&ISO"), directory, NORWAY)
    )
    assert segs["MSA"][1] == "AR"
    assert segs["ERR"][2] == "MSH^1^10"


def test_echoed_text_is_escaped(directory: PatientDirectory) -> None:
    raw = message(msh(mtype="ADT^A\\F\\9"), "PID|||x")  # trigger event "A|9"
    segs = parse_ack(handle_message(raw, directory, NORWAY))
    assert segs["MSA"][1] == "AR"
    assert segs["MSH"][8] == "ACK^A\\F\\9^ACK"
    assert "A\\F\\9" in segs["ERR"][8]
    assert len(segs["MSA"]) == 4


def test_escape_round_trip() -> None:
    text = "a|b^c~d\\e&f"
    assert escape(text) == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"
    assert unescape(escape(text), STD) == text
    assert unescape("\\X41C3A6\\x\\H\\y\\.br\\", STD) == "Aæxy"
    assert escape("line\rbreak\n") == "line break "


def test_one_frame_is_one_message(directory: PatientDirectory) -> None:
    """A second MSH in a frame would be applied (or not) without an answer of its own."""
    raw = message(
        msh("A04", control="C1"),
        f"PID|||TWO1^^^&{LOCAL}&ISO",
        msh("A04", control="C2"),
        f"PID|||TWO2^^^&{LOCAL}&ISO",
    )
    segs = parse_ack(handle_message(raw, directory, NORWAY))
    assert segs["MSA"][1:3] == ["AR", "C1"] and segs["ERR"][2] == "MSH^2"
    assert directory.resolve(f"TWO1^^^&{LOCAL}&ISO") is None


@pytest.mark.parametrize("version", ["3.0", "", "X"])
def test_versions_other_than_hl7_v2_are_refused(directory: PatientDirectory, version: str) -> None:
    header = msh("A04").rsplit("|", 1)[0] + f"|{version}"
    segs = parse_ack(handle_message(message(header, f"PID|||V1^^^&{LOCAL}&ISO"), directory, NORWAY))
    assert segs["MSA"][1] == "AR" and segs["ERR"][3].startswith("203^")
    assert directory.resolve(f"V1^^^&{LOCAL}&ISO") is None


def test_control_characters_never_reach_the_directory(directory: PatientDirectory, engine: Engine) -> None:
    """NUL (which PostgreSQL refuses in text) or a line end sent escaped: dropped from names,
    refused in identifiers."""
    raw = message(msh("A04"), f"PID|||C1^^^&{LOCAL}&ISO||Nord\\X0D0A\\mann\x00^Kari")
    assert "MSA|AA|" in handle_message(raw, directory, NORWAY)
    assert _row(engine, f"C1^^^&{LOCAL}&ISO").family_name == "Nordmann"
    raw = message(msh("A04"), f"PID|||C\x002^^^&{LOCAL}&ISO")
    assert parse_ack(handle_message(raw, directory, NORWAY))["MSA"][1] == "AE"
