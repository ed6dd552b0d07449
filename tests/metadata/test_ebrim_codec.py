"""ebRIM 3.0 codec: every SubmitObjectsRequest of the NIST kit and our samples survive a round trip."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from lxml import etree

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.model import RegistryObject, Submission

SUBMIT = f"{{{v.NS_LCM}}}SubmitObjectsRequest"


@pytest.fixture(scope="module")
def kit_submissions(testkit: Path) -> list[Path]:
    marker = v.NS_LCM.encode()
    found = []
    for path in sorted(testkit.rglob("*.xml")):
        data = path.read_bytes()
        if marker in data and b"SubmitObjectsRequest" in data:
            found.append(path)
    return found


def summary(obj: RegistryObject) -> tuple:
    """Everything an object carries, nested parts included, as comparable values."""
    return (
        type(obj).__name__,
        obj.id,
        obj.lid,
        obj.status,
        obj.object_type,
        [(s.value, s.lang, s.charset) for s in obj.name],
        [(s.value, s.lang, s.charset) for s in obj.description],
        [(s.name, tuple(s.values), s.slot_type) for s in obj.slots],
        [summary(c) for c in obj.classifications],
        [summary(e) for e in obj.external_ids],
        tuple(
            getattr(obj, attr, None)
            for attr in (
                "mime_type",
                "classified_object",
                "classification_scheme",
                "classification_node",
                "node_representation",
                "registry_object",
                "identification_scheme",
                "value",
                "association_type",
                "source_object",
                "target_object",
            )
        ),
    )


def all_of(sub: Submission) -> list[tuple]:
    return [summary(o) for o in sub.objects] + [(r.id, r.home) for r in sub.object_refs]


def test_kit_submissions_round_trip(kit_submissions: list[Path], lcm_schema: etree.XMLSchema) -> None:
    checked = 0
    for path in kit_submissions:
        try:
            root = safexml.parse(path.read_bytes())
        except safexml.XmlRejected:
            continue
        element = next(iter(root.iter(SUBMIT)), None)
        if element is None:
            continue
        first = ebrim.parse_submit_objects_request(element)
        data = ebrim.submit_objects_request_bytes(first)
        again = safexml.parse(data)
        assert lcm_schema.validate(again) or not lcm_schema.validate(element), (path, lcm_schema.error_log)
        second = ebrim.parse_submit_objects_request(again)
        assert all_of(second) == all_of(first), path
        checked += 1
    assert checked >= 20, f"only {checked} ebRIM 3.0 submissions found in the kit"


def test_sample_round_trip_keeps_extra_slots(lcm_schema: etree.XMLSchema) -> None:
    s = samples.submission(rng=random.Random(5), documents=2, with_folder=True)
    s.documents[0].set_slot("urn:no:nhn:xds:extra", ["én", "<to & tre>"])
    s.submission.submission_sets[0].set_slot("urn:no:nhn:xds:ss-extra", ["x"])
    data = ebrim.submit_objects_request_bytes(s.submission)
    root = safexml.parse(data)
    lcm_schema.assertValid(root)
    back = ebrim.parse_submit_objects_request(root)
    assert all_of(back) == all_of(s.submission)
    assert back.documents[0].slot_values("urn:no:nhn:xds:extra") == ["én", "<to & tre>"]


def test_single_object_fragment_round_trip() -> None:
    d = samples.document_entry("Document01", samples.patient_cx("13116900216"), random.Random(1))
    d.description = []
    d.status = v.STATUS_APPROVED
    back = ebrim.parse_object(safexml.parse(ebrim.to_bytes(d)))
    assert summary(back) == summary(d)  # type: ignore[arg-type]


def test_wrong_root_is_a_metadata_error() -> None:
    from xds.metadata.errors import XdsException

    with pytest.raises(XdsException) as exc:
        ebrim.parse_submit_objects_request(etree.fromstring(b"<nope/>"))
    assert exc.value.errors[0].code == v.XDSRegistryMetadataError
