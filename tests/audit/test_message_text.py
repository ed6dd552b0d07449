"""The audit message written as text is byte for byte what lxml writes from its element tree
(DICOM PS3.15 A.5.1), hostile characters included, and validates against the DICOM schema."""

from __future__ import annotations

import random

from lxml import etree

from xds.audit import message as m

ALPHABET = "ab <>&\"'\t\n\r\x01\x0b å€\ufffe  x"


def _messages(count: int) -> list[m.AuditMessage]:
    rng = random.Random(3)

    def s() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))

    def code() -> m.Code:
        return m.Code(s(), s(), s())

    out = []
    for _ in range(count):
        participants = [
            m.ActiveParticipant(
                s(),
                rng.random() < 0.5,
                [code()] if rng.random() < 0.5 else [],
                s(),
                s(),
                s(),
                rng.choice("12"),
            )
            for _ in range(3)
        ]
        objects = [
            m.ParticipantObject(
                s(), code(), "2", "24", s(), s().encode() if rng.random() < 0.5 else b"", [(s(), s())], s()
            )
            for _ in range(2)
        ]
        out.append(
            m.AuditMessage(
                event_id=code(),
                action=rng.choice("CRUDE"),
                outcome="0",
                type_codes=[code()],
                outcome_description=s(),
                purpose_of_use=[code()] if rng.random() < 0.5 else [],
                participants=participants,
                source=m.AuditSource(s(), s(), rng.choice(["", "4"])),
                objects=objects,
            )
        )
    return out


def test_text_is_what_lxml_writes() -> None:
    for msg in _messages(500):
        assert msg.xml() == etree.tostring(msg.element(), encoding="utf-8")


def test_text_of_a_plain_message_validates(audit_schema: etree.RelaxNG) -> None:
    msg = m.AuditMessage(
        event_id=m.Code("110112", "DCM", "Query"),
        action="E",
        outcome=m.SUCCESS,
        type_codes=[m.Code("ITI-18", "IHE Transactions", "Registry Stored Query")],
        participants=[m.ActiveParticipant("a & b <c>", True, [m.ROLE_SOURCE], network_id="127.0.0.1")],
        source=m.AuditSource("xds", "site"),
        objects=[
            m.ParticipantObject("p\t1", m.PATIENT_NUMBER, m.PERSON, m.ROLE_PATIENT, details=[("k", "v")])
        ],
    )
    assert audit_schema.validate(etree.fromstring(msg.xml())), audit_schema.error_log


def test_the_spooled_form_gives_back_the_same_message() -> None:
    from xds.audit.requester import Requester
    from xds.audit.trail import Record, spooled

    who = Requester("Kari <Lege>", "123", "LE", "Sykehus & co", "983971636", "TREAT", "p^^^&1&ISO", "idp")
    for msg in _messages(200):
        got = Record.from_bytes(spooled(msg, who))
        assert got == Record.of(msg, who)
        assert got.summary["btg"] is False and got.summary["hpr"] == "123"
    assert Record.from_bytes(spooled(msg, None)) == Record.of(msg)


def test_a_record_spooled_whole_by_an_earlier_version_is_still_read() -> None:
    from xds.audit.trail import Record

    msg = _messages(1)[0]
    assert Record.from_bytes(Record.of(msg).to_bytes()) == Record.of(msg)
