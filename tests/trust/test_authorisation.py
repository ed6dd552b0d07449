"""Authorisation decided on the stored data, over real HTTP (xds.trust.policy, xds.registry.access).

Two patients, A and B, each with a submission set, a folder, two lab results in it, a transform of
the first (a relationship association), a reference id and a document in the repository. Every one
of the 14 ITI-18 and 3 ITI-51 stored queries and ITI-43, aimed at B's objects (B's patient id, B's
entryUUIDs, no patient at all), answers B's objects under B's assertion and nothing of B's under
A's. Writes are bound to the assertion's patient and role, and removals to the institution that
provided the document.
"""

from __future__ import annotations

import base64
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from support import RunningServer, make_config, new_database, require_trust

from xds import safexml, samples
from xds.consumer import adhoc_query_request, query_value
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.model import Classification, Slot, Submission
from xds.soap.envelope import build_request
from xds.trust import assertion as xa
from xds.trust.keys import KeySet
from xds.trust.wssecurity import secure_request

ISSUER = "https://helseid-xdssaml.test.nhn.no"
LAB = ("C00-1", "2.16.578.1.12.4.1.1.9602")
REFERENCE = "LAB-4711^^^&2.16.578.1.12.4.5.100.9&ISO^urn:ihe:iti:xds:2013:accession"
REFERENCE_SLOT = "urn:ihe:iti:xds:2013:referenceIdList"
RIM = f"{{{v.NS_RIM}}}"


def attrs(patient: str, **over: str) -> xa.TrustAttributes:
    values = dict(
        subject_id="Kari Nordmann",
        hpr_number="9144900",
        role="LE",
        healthcare_service="Hjemmesykepleie",
        organisation_id="983971636",
        purpose_of_use="TREAT",
        resource_id=patient,
    )
    values.update(over)
    return xa.TrustAttributes(**values)  # type: ignore[arg-type]


def secured(keys: KeySet, url: str, body: bytes, action: str, who: xa.TrustAttributes) -> bytes:
    envelope, _ = build_request(action, body, to=url)
    assertion = xa.sign_assertion(
        xa.build_assertion(who, issuer=ISSUER), keys.idp.key_pem(), keys.idp.cert_pem()
    )
    sender = keys.institutions["kommune"]
    return secure_request(envelope, assertion=assertion, key_pem=sender.key_pem(), cert_pem=sender.cert_pem())


def post(url: str, data: bytes, action: str) -> httpx.Response:
    ctype = f'application/soap+xml; charset=UTF-8; action="{action}"'
    response = httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)
    assert response.status_code == 200, response.text
    return response


@dataclass
class Patient:
    """One patient's stored objects, as the registry filed them."""

    cx: str
    docs: list[str] = field(default_factory=list)  # entryUUIDs; docs[0] has a transform
    unique_ids: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    associations: list[str] = field(default_factory=list)
    retrievable: str = ""  # uniqueId of the document in the repository

    @property
    def ids(self) -> set[str]:
        return {*self.docs, *self.sets, *self.folders, *self.associations}


@dataclass
class World:
    server: RunningServer
    keys: KeySet
    a: Patient
    b: Patient
    repository_id: str

    @property
    def registry(self) -> str:
        return f"{self.server.url}/registry"

    @property
    def repository(self) -> str:
        return f"{self.server.url}/repository"

    def send(self, url: str, body: bytes, action: str, who: xa.TrustAttributes) -> httpx.Response:
        return post(url, secured(self.keys, url, body, action, who), action)


def lab_results(sample: samples.Sample) -> samples.Sample:
    """Every entry a lab result (C00-1, normal confidentiality) with the shared reference id."""
    for doc in sample.documents:
        doc.classifications = [c for c in doc.classifications if c.classification_scheme != v.DE_CLASS_CODE]
        doc.classifications.append(
            Classification(
                id=f"cl-{uuid.uuid4().hex[:8]}",
                classified_object=doc.id,
                classification_scheme=v.DE_CLASS_CODE,
                node_representation=LAB[0],
                slots=[Slot("codingScheme", [LAB[1]])],
            )
        )
        doc.slots.append(Slot(REFERENCE_SLOT, [REFERENCE]))
    return sample


def provide_body(submission: Submission, content: bytes = b"hello") -> bytes:
    for doc in submission.documents:
        doc.slots = [s for s in doc.slots if s.name not in ("hash", "size", "repositoryUniqueId")]
    documents = b"".join(
        f'<xdsb:Document id="{d.id}">'.encode() + base64.b64encode(content) + b"</xdsb:Document>"
        for d in submission.documents
    )
    return (
        f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
        + ebrim.submit_objects_request_bytes(submission)
        + documents
        + b"</xdsb:ProvideAndRegisterDocumentSetRequest>"
    )


def status_of(response: httpx.Response) -> str:
    return safexml.parse(response.content).find(f".//{{{v.NS_RS}}}RegistryResponse").get("status", "")


def _populate(world: World, patient: Patient, rng: random.Random) -> None:
    from sqlalchemy import select

    from xds.registry import schema as t

    who = attrs(patient.cx)
    sample = lab_results(samples.submission(patient.cx, documents=2, with_folder=True, rng=rng))
    body = ebrim.submit_objects_request_bytes(sample.submission)
    assert v.RESPONSE_SUCCESS in status_of(world.send(world.registry, body, v.ACTION_REGISTER, who))
    patient.unique_ids = [d.unique_id or "" for d in sample.documents]
    engine = world.server.app.state.registry.engine
    with engine.connect() as conn:
        d = t.documents.c
        rows = conn.execute(select(d.uuid, d.unique_id).where(d.unique_id.in_(patient.unique_ids))).all()
        by_uid = {uid: u for u, uid in rows}
        patient.docs = [by_uid[uid] for uid in patient.unique_ids]
    # a transform of the first entry: GetRelatedDocuments finds the pair
    more = lab_results(samples.submission(patient.cx, documents=1, rng=rng))
    more.submission.objects.append(
        samples.relationship("xfrm", v.XFRM, more.documents[0].id, patient.docs[0])
    )
    body = ebrim.submit_objects_request_bytes(more.submission)
    assert v.RESPONSE_SUCCESS in status_of(world.send(world.registry, body, v.ACTION_REGISTER, who))
    # and one document provided to the repository (ITI-41)
    provided = lab_results(samples.submission(patient.cx, rng=rng))
    response = world.send(
        world.repository, provide_body(provided.submission), v.ACTION_PROVIDE_AND_REGISTER, who
    )
    assert v.RESPONSE_SUCCESS in status_of(response), response.text
    patient.retrievable = provided.documents[0].unique_id or ""
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.documents.c.uuid).where(t.documents.c.patient_id == patient.cx)
        ).scalars()
        patient.docs += [u for u in rows if u not in patient.docs]
        patient.sets = list(
            conn.execute(
                select(t.submission_sets.c.uuid).where(t.submission_sets.c.patient_id == patient.cx)
            ).scalars()
        )
        patient.folders = list(
            conn.execute(select(t.folders.c.uuid).where(t.folders.c.patient_id == patient.cx)).scalars()
        )
        mine = {*patient.docs, *patient.sets, *patient.folders}
        a = t.associations.c
        links = conn.execute(select(a.uuid, a.source, a.target)).all()
        patient.associations = [u for u, s, tg in links if s in mine or tg in mine]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("authorisation")
    rng = random.Random(uuid.uuid4().int)
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        require_trust(cfg, keys, ISSUER)
        with RunningServer(cfg) as running:
            repo = running.app.state.repositories["default"]
            first, second = samples.person_number(rng), samples.person_number(rng)
            w = World(
                running,
                keys,
                Patient(samples.patient_cx(first)),
                Patient(samples.patient_cx(second)),
                repo.unique_id,
            )
            _populate(w, w.a, rng)
            _populate(w, w.b, rng)
            yield w


# --- reads ------------------------------------------------------------------------------------------
APPROVED = query_value([v.STATUS_APPROVED], False)


def _queries(b: Patient) -> dict[str, tuple[str, dict[str, str]]]:
    """Each stored query (name → (id, parameters)) aimed at B's objects."""
    pid = query_value([b.cx], True)
    docs = query_value(b.docs, False)
    lab = query_value([f"{LAB[0]}^^{LAB[1]}"], False)
    ref = query_value([REFERENCE], False)
    return {
        "FindDocuments": (
            v.SQ_FIND_DOCUMENTS,
            {"$XDSDocumentEntryPatientId": pid, "$XDSDocumentEntryStatus": APPROVED},
        ),
        "FindDocuments, a parameter name with a trailing space": (
            v.SQ_FIND_DOCUMENTS,
            {"$XDSDocumentEntryPatientId ": pid, "$XDSDocumentEntryStatus": APPROVED},
        ),
        "FindDocumentsByReferenceId": (
            v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
            {
                "$XDSDocumentEntryPatientId": pid,
                "$XDSDocumentEntryStatus": APPROVED,
                "$XDSDocumentEntryReferenceIdList": ref,
            },
        ),
        "FindSubmissionSets": (
            v.SQ_FIND_SUBMISSION_SETS,
            {"$XDSSubmissionSetPatientId": pid, "$XDSSubmissionSetStatus": APPROVED},
        ),
        "FindFolders": (v.SQ_FIND_FOLDERS, {"$XDSFolderPatientId": pid, "$XDSFolderStatus": APPROVED}),
        "GetAll": (
            v.SQ_GET_ALL,
            {
                "$patientId": pid,
                "$XDSDocumentEntryStatus": APPROVED,
                "$XDSSubmissionSetStatus": APPROVED,
                "$XDSFolderStatus": APPROVED,
            },
        ),
        "GetDocuments": (v.SQ_GET_DOCUMENTS, {"$XDSDocumentEntryEntryUUID": docs}),
        "GetDocuments by uniqueId": (
            v.SQ_GET_DOCUMENTS,
            {"$XDSDocumentEntryUniqueId": query_value(b.unique_ids, False)},
        ),
        "GetFolders": (v.SQ_GET_FOLDERS, {"$XDSFolderEntryUUID": query_value(b.folders, False)}),
        "GetAssociations": (
            v.SQ_GET_ASSOCIATIONS,
            {"$uuid": query_value([*b.docs, *b.sets, *b.folders], False)},
        ),
        "GetDocumentsAndAssociations": (
            v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS,
            {"$XDSDocumentEntryEntryUUID": docs},
        ),
        "GetSubmissionSets": (v.SQ_GET_SUBMISSION_SETS, {"$uuid": docs}),
        "GetSubmissionSetAndContents": (
            v.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
            {"$XDSSubmissionSetEntryUUID": query_value(b.sets[:1], True)},
        ),
        "GetFolderAndContents": (
            v.SQ_GET_FOLDER_AND_CONTENTS,
            {"$XDSFolderEntryUUID": query_value(b.folders[:1], True)},
        ),
        "GetFoldersForDocument": (
            v.SQ_GET_FOLDERS_FOR_DOCUMENT,
            {"$XDSDocumentEntryEntryUUID": query_value(b.docs[:1], True)},
        ),
        "GetRelatedDocuments": (
            v.SQ_GET_RELATED_DOCUMENTS,
            {
                "$XDSDocumentEntryEntryUUID": query_value(b.docs[:1], True),
                "$AssociationTypes": query_value([v.XFRM], False),
            },
        ),
        # ITI-51: B's patient id among others, or none at all
        "FindDocumentsForMultiplePatients": (
            v.SQ_FIND_DOCUMENTS_MPQ,
            {"$XDSDocumentEntryClassCode": lab, "$XDSDocumentEntryStatus": APPROVED},
        ),
        "FindDocumentsForMultiplePatients, both patients": (
            v.SQ_FIND_DOCUMENTS_MPQ,
            {"$XDSDocumentEntryPatientId": "(" + pid + ")", "$XDSDocumentEntryStatus": APPROVED},
        ),
        "FindFoldersForMultiplePatients": (
            v.SQ_FIND_FOLDERS_MPQ,
            {"$XDSFolderCodeList": lab, "$XDSFolderStatus": APPROVED},
        ),
        "FindDocumentsByReferenceIdForMultiplePatients": (
            v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ,
            {"$XDSDocumentEntryReferenceIdList": ref, "$XDSDocumentEntryStatus": APPROVED},
        ),
    }


QUERY_NAMES = list(_queries(Patient("x^^^&1.2&ISO", docs=["d"], sets=["s"], folders=["f"])))
MULTI_PATIENT = {v.SQ_FIND_DOCUMENTS_MPQ, v.SQ_FIND_FOLDERS_MPQ, v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ}


def test_every_stored_query_is_covered() -> None:
    covered = {
        query_id for query_id, _ in _queries(Patient("x", docs=["d"], sets=["s"], folders=["f"])).values()
    }
    assert covered == set(v.STORED_QUERY_NAMES)


def answered_ids(
    world: World, query_id: str, params: dict[str, str], who: xa.TrustAttributes, return_type: str
) -> set[str]:
    action = v.ACTION_MULTI_PATIENT_QUERY if query_id in MULTI_PATIENT else v.ACTION_STORED_QUERY
    body = adhoc_query_request(query_id, params, return_type=return_type)
    response = world.send(world.registry, body, action, who)
    root = safexml.parse(response.content)
    answer = root.find(f".//{{{v.NS_QUERY}}}AdhocQueryResponse")
    assert answer is not None and answer.get("status") == v.RESPONSE_SUCCESS, response.text
    objects = answer.find(RIM + "RegistryObjectList")
    return {el.get("id", "").lower() for el in (objects if objects is not None else [])}


@pytest.mark.parametrize("return_type", [v.RETURN_LEAF_CLASS, v.RETURN_OBJECT_REF])
@pytest.mark.parametrize("name", QUERY_NAMES)
def test_a_query_under_patient_as_assertion_answers_nothing_of_patient_b(
    world: World, name: str, return_type: str
) -> None:
    query_id, params = _queries(world.b)[name]
    if "both patients" in name:
        params = {**params, "$XDSDocumentEntryPatientId": query_value([world.a.cx, world.b.cx], False)}
    # aimed well: under B's own assertion the same request finds B's objects
    assert answered_ids(world, query_id, params, attrs(world.b.cx), return_type) & world.b.ids
    under_a = answered_ids(world, query_id, params, attrs(world.a.cx), return_type)
    assert not under_a & world.b.ids, name


def test_a_multi_patient_query_answers_only_the_assertions_patient(world: World) -> None:
    params = {
        "$XDSDocumentEntryPatientId": query_value([world.a.cx, world.b.cx], False),
        "$XDSDocumentEntryStatus": APPROVED,
    }
    found = answered_ids(world, v.SQ_FIND_DOCUMENTS_MPQ, params, attrs(world.a.cx), v.RETURN_LEAF_CLASS)
    assert found == set(world.a.docs)


def retrieve_body(repository_id: str, *unique_ids: str) -> bytes:
    requests = "".join(
        f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repository_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        for uid in unique_ids
    )
    return f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">{requests}</xdsb:RetrieveDocumentSetRequest>'.encode()


def test_retrieve_under_patient_as_assertion_answers_nothing_of_patient_b(world: World) -> None:
    body = retrieve_body(world.repository_id, world.a.retrievable, world.b.retrievable)
    mine = world.send(world.repository, body, v.ACTION_RETRIEVE, attrs(world.a.cx))
    assert mine.headers["content-type"].startswith("multipart/related")
    assert world.a.retrievable.encode() in mine.content and b"PartialSuccess" in mine.content
    assert f"document {world.b.retrievable}: refused by access rule 'patient'".encode() in mine.content
    only_b = world.send(
        world.repository,
        retrieve_body(world.repository_id, world.b.retrievable),
        v.ACTION_RETRIEVE,
        attrs(world.a.cx),
    )
    assert not only_b.headers["content-type"].startswith("multipart/related")
    assert v.XDSDocumentUniqueIdError.encode() in only_b.content
    theirs = world.send(
        world.repository,
        retrieve_body(world.repository_id, world.b.retrievable),
        v.ACTION_RETRIEVE,
        attrs(world.b.cx),
    )
    assert theirs.headers["content-type"].startswith("multipart/related")


# --- finding 4: role and HPR authorisation --------------------------------------------------------
def test_a_secretary_without_hpr_gets_no_lab_results(world: World) -> None:
    secretary = attrs(world.a.cx, subject_id="Sekretær", role="HE", hpr_number="")
    params = {
        "$XDSDocumentEntryPatientId": query_value([world.a.cx], True),
        "$XDSDocumentEntryStatus": APPROVED,
    }
    assert answered_ids(world, v.SQ_FIND_DOCUMENTS, params, secretary, v.RETURN_LEAF_CLASS) == set()
    response = world.send(
        world.repository,
        retrieve_body(world.repository_id, world.a.retrievable),
        v.ACTION_RETRIEVE,
        secretary,
    )
    assert b"refused by access rule 'care-read': role 'HE'" in response.content


def test_a_citizen_in_the_urn_spelling_reads_their_own_record(world: World) -> None:
    number = world.a.cx.split("^")[0]
    citizen = attrs(
        world.a.cx,
        subject_id=f"urn:oid:2.16.578.1.12.4.1.4.1:{number}",
        purpose_of_use="PATRQT",
        hpr_number="",
        role="",
    )
    params = {
        "$XDSDocumentEntryPatientId": query_value([world.a.cx], True),
        "$XDSDocumentEntryStatus": APPROVED,
    }
    assert answered_ids(world, v.SQ_FIND_DOCUMENTS, params, citizen, v.RETURN_LEAF_CLASS) >= set(
        world.a.docs[:2]
    )
    response = world.send(
        world.repository, retrieve_body(world.repository_id, world.a.retrievable), v.ACTION_RETRIEVE, citizen
    )
    assert response.headers["content-type"].startswith("multipart/related")


# --- finding 3: writes ----------------------------------------------------------------------------------
def test_a_citizen_cannot_register_for_another_patient(world: World) -> None:
    number = world.a.cx.split("^")[0]
    citizen = attrs(world.a.cx, subject_id=number, purpose_of_use="PATRQT", hpr_number="", role="")
    foreign = lab_results(samples.submission(world.b.cx))
    body = ebrim.submit_objects_request_bytes(foreign.submission)
    response = world.send(world.registry, body, v.ACTION_REGISTER, citizen)
    assert v.RESPONSE_FAILURE in status_of(response)
    assert b"refused by access rule 'patient'" in response.content
    own = lab_results(samples.submission(world.a.cx))
    response = world.send(
        world.registry, ebrim.submit_objects_request_bytes(own.submission), v.ACTION_REGISTER, citizen
    )
    assert (
        v.RESPONSE_FAILURE in status_of(response) and b"refused by access rule 'no-rule'" in response.content
    )


def test_provide_for_another_patient_stores_nothing(world: World) -> None:
    foreign = lab_results(samples.submission(world.b.cx))
    uid = foreign.documents[0].unique_id
    response = world.send(
        world.repository, provide_body(foreign.submission), v.ACTION_PROVIDE_AND_REGISTER, attrs(world.a.cx)
    )
    assert (
        v.RESPONSE_FAILURE in status_of(response) and b"refused by access rule 'patient'" in response.content
    )
    assert not world.server.app.state.repositories["default"].stored_rows([uid or ""])


def remove_body(repository_id: str, unique_id: str) -> bytes:
    return (
        f'<rmd:RemoveDocumentsRequest xmlns:rmd="{v.NS_RMD}" xmlns:xdsb="{v.NS_XDSB}">'
        f"<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repository_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{unique_id}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        "</rmd:RemoveDocumentsRequest>"
    ).encode()


def test_only_the_providing_institution_removes_a_document(world: World) -> None:
    rng = random.Random(uuid.uuid4().int)
    sample = lab_results(samples.submission(world.a.cx, rng=rng))
    who = attrs(world.a.cx)
    assert v.RESPONSE_SUCCESS in status_of(
        world.send(world.repository, provide_body(sample.submission), v.ACTION_PROVIDE_AND_REGISTER, who)
    )
    uid = sample.documents[0].unique_id or ""
    body = remove_body(world.repository_id, uid)
    other = attrs(world.a.cx, organisation_id="974633574")  # another institution, same patient
    refused = world.send(world.repository, body, v.ACTION_REMOVE_DOCUMENTS, other)
    assert v.RESPONSE_FAILURE in status_of(refused)
    assert b"refused by access rule 'owner-changes'" in refused.content
    repo = world.server.app.state.repositories["default"]
    assert repo.stored_rows([uid])  # the bytes are still there
    elsewhere = world.send(world.repository, body, v.ACTION_REMOVE_DOCUMENTS, attrs(world.b.cx))
    assert b"refused by access rule 'patient'" in elsewhere.content and repo.stored_rows([uid])
    assert v.RESPONSE_SUCCESS in status_of(world.send(world.repository, body, v.ACTION_REMOVE_DOCUMENTS, who))
    assert not repo.stored_rows([uid])


def test_a_replacement_by_another_institution_is_refused(world: World) -> None:
    replacement = lab_results(samples.submission(world.a.cx))
    replacement.submission.objects.append(
        samples.relationship("rplc", v.RPLC, replacement.documents[0].id, world.a.docs[1])
    )
    body = ebrim.submit_objects_request_bytes(replacement.submission)
    response = world.send(
        world.registry, body, v.ACTION_REGISTER, attrs(world.a.cx, organisation_id="974633574")
    )
    assert v.RESPONSE_FAILURE in status_of(response)
    assert b"refused by access rule 'owner-changes'" in response.content


def _fresh_entry(world: World) -> str:
    """A new entry of patient A, registered by A's institution; its entryUUID."""
    from sqlalchemy import select

    from xds.registry import schema as t

    sample = lab_results(samples.submission(world.a.cx))
    body = ebrim.submit_objects_request_bytes(sample.submission)
    assert v.RESPONSE_SUCCESS in status_of(
        world.send(world.registry, body, v.ACTION_REGISTER, attrs(world.a.cx))
    )
    with world.server.app.state.registry.engine.connect() as conn:
        d = t.documents.c
        return str(
            conn.execute(select(d.uuid).where(d.unique_id == sample.documents[0].unique_id)).scalar_one()
        )


def test_metadata_updates_and_removals_only_by_the_submitting_institution(world: World) -> None:
    from lifecycle import status_update, update_set

    entry = _fresh_entry(world)

    def deprecate(who: xa.TrustAttributes) -> httpx.Response:
        ss = update_set(world.a.cx)
        body = ebrim.submit_objects_request_bytes(
            Submission(objects=[ss, status_update(ss, entry, v.STATUS_APPROVED, v.STATUS_DEPRECATED)])
        )
        return world.send(world.registry, body, v.ACTION_UPDATE_DOCUMENT_SET, who)

    # ITI-57: another institution may not change the entry's status; the one that submitted it may
    refused = deprecate(attrs(world.a.cx, organisation_id="974633574"))
    assert v.RESPONSE_FAILURE in status_of(refused)
    assert f"{entry}: refused by access rule 'owner-changes'".encode() in refused.content
    assert v.RESPONSE_SUCCESS in status_of(deprecate(attrs(world.a.cx)))
    # ITI-62: neither another institution nor anyone under another patient's assertion removes it
    body = (
        f'<lcm:RemoveObjectsRequest xmlns:lcm="{v.NS_LCM}" xmlns:rim="{v.NS_RIM}"><rim:ObjectRefList>'
        f'<rim:ObjectRef id="{entry}"/></rim:ObjectRefList></lcm:RemoveObjectsRequest>'
    ).encode()
    for who, rule in (
        (attrs(world.a.cx, organisation_id="974633574"), "owner-changes"),
        (attrs(world.b.cx), "patient"),
    ):
        response = world.send(world.registry, body, v.ACTION_DELETE_DOCUMENT_SET, who)
        assert v.RESPONSE_FAILURE in status_of(response)
        assert f"refused by access rule '{rule}'".encode() in response.content


def test_break_the_glass_is_allowed_and_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="xds.trust.policy")
    btg = attrs(world.a.cx, purpose_of_use="BTG", healthcare_service="")
    params = {
        "$XDSDocumentEntryPatientId": query_value([world.a.cx], True),
        "$XDSDocumentEntryStatus": APPROVED,
    }
    assert answered_ids(world, v.SQ_FIND_DOCUMENTS, params, btg, v.RETURN_LEAF_CLASS) >= set(world.a.docs[:2])
    marked = [r.getMessage() for r in caplog.records if r.name == "xds.trust.policy"]
    assert any(m.startswith("break-the-glass: Kari Nordmann (983971636) read object") for m in marked), marked
