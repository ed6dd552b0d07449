"""ITI-57, ITI-92 and ITI-62 under the trust model, over real HTTP: a stored entry is changed or
removed only by the institution that submitted it (ITI TF-2b §3.57.4.1.3, §3.62.4.1.3, authorised
like a write on the stored data, ``xds.registry.access``)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from lifecycle import new_version, update_set
from support import RunningServer, make_config, require_trust
from test_http_trust import ISSUER, PATIENT, attrs, post, secured

from xds import safexml, samples
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.model import LocalizedString, Submission
from xds.metadata.registry_response import parse_registry_response
from xds.registry.register import assign_uuids
from xds.trust.keys import KeySet

KOMMUNE = "983971636"  # the submitting institution (signs with the "kommune" key)
AHUS = "974633574"  # another one (signs with the "ahus" key)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[RunningServer]:
    from support import new_database

    tmp = tmp_path_factory.mktemp("lifecycle-trust")
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        require_trust(cfg, keys, ISSUER)
        with RunningServer(cfg) as running:
            yield running


def send(keys: KeySet, url: str, action: str, body: bytes, org: str) -> tuple[str, list]:  # type: ignore[type-arg]
    signer = keys.institutions["kommune" if org == KOMMUNE else "ahus"]
    data = secured(keys, url, body, action, attributes=attrs(organisation_id=org), signer=signer)
    response = post(url, data, action)
    assert response.status_code == 200, response.text
    body_el = safexml.parse(response.content).find(f"{{{v.NS_SOAP12}}}Body")
    assert body_el is not None
    return parse_registry_response(body_el[0])


def removal(ids: list[str]) -> bytes:
    refs = "".join(f'<rim:ObjectRef id="{i}"/>' for i in ids)
    return (
        f'<lcm:RemoveObjectsRequest xmlns:lcm="{v.NS_LCM}" xmlns:rim="{v.NS_RIM}">'
        f"<rim:ObjectRefList>{refs}</rim:ObjectRefList></lcm:RemoveObjectsRequest>"
    ).encode()


def test_only_the_submitting_institution_updates_and_removes(server: RunningServer, keys: KeySet) -> None:
    url = f"{server.url}/registry"
    sample = samples.submission(PATIENT, rng=random.Random())
    assign_uuids(sample.submission)
    status, errors = send(
        keys, url, v.ACTION_REGISTER, ebrim.submit_objects_request_bytes(sample.submission), KOMMUNE
    )
    assert status == v.RESPONSE_SUCCESS, errors
    doc = sample.documents[0]

    def version_2() -> bytes:
        ss = update_set(PATIENT)
        new, member = new_version(doc, "1", ss)
        new.lid = doc.id
        new.name = [LocalizedString("Korrigert")]
        return ebrim.submit_objects_request_bytes(Submission(objects=[ss, new, member]))

    for action in (v.ACTION_UPDATE_DOCUMENT_SET, v.ACTION_RESTRICTED_UPDATE):
        status, errors = send(keys, url, action, version_2(), AHUS)
        assert status == v.RESPONSE_FAILURE
        assert doc.id in {e.location for e in errors} and all(e.code == v.XDSRegistryError for e in errors)
    status, errors = send(keys, url, v.ACTION_UPDATE_DOCUMENT_SET, version_2(), KOMMUNE)
    assert status == v.RESPONSE_SUCCESS, errors

    everything = [o.id for o in sample.submission.objects]
    status, errors = send(keys, url, v.ACTION_DELETE_DOCUMENT_SET, removal(everything), AHUS)
    assert status == v.RESPONSE_FAILURE and {e.code for e in errors} == {v.XDSRegistryError}
    status, errors = send(keys, url, v.ACTION_DELETE_DOCUMENT_SET, removal(everything), KOMMUNE)
    assert status == v.RESPONSE_SUCCESS, errors
