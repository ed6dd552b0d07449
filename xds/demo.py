"""``xds demo``: three communities on 127.0.0.1 and the story of a municipal doctor reading a hospital's results.

Each community is an independent deployment (own registry database, repository, keys and
configuration) serving its XCA responding gateway (ITI TF-2b §3.38-3.39) and an initiating
gateway over the directory of the other two:

- St. Olavs hospital (Helse Midt-Norge): lab results (C00-1) and radiology reports (E00-1);
- Trondheim kommune: the municipal journal, whose doctor asks;
- a fastlege (GP) office.

Keys come from a development CA made on the spot (:func:`xds.trust.keys.init_keys`), patients are
synthetic (national test-register form, month + 80, valid check digits). Identifiers of the
communities and repositories are demo values under the national document-sharing root.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xds import consumer, samples
from xds.config import CommunityConfig, Config, IssuerConfig, RepositoryConfig
from xds.metadata import vocabulary as v
from xds.metadata.model import Slot, Submission
from xds.soap.envelope import build_request
from xds.trust.assertion import TrustAttributes
from xds.trust.keys import KeySet, init_keys

ISSUER = "https://helseid-xdssaml.test.nhn.no"
AUDIENCE = "nhn:dokumentdeling-saml"  # the national document-sharing audience (shared/profiles/norway.md)
ROOT = "2.16.578.1.12.4.1.7.9"  # demo communities under the document-sharing root (not assigned ones)


@dataclass(frozen=True)
class Site:
    key: str
    name: str
    home: str
    repository: str
    repository_oid: str
    organisation: str
    orgnr: str


SITES = (
    Site(
        "stolav",
        "St. Olavs hospital (Helse Midt-Norge)",
        f"urn:oid:{ROOT}.1",
        "stolav",
        f"{ROOT}.1.1",
        "St. Olavs hospital HF",
        "883974832",
    ),
    Site(
        "kommune",
        "Trondheim kommune",
        f"urn:oid:{ROOT}.2",
        "journal",
        f"{ROOT}.2.1",
        "Trondheim kommune",
        "942110464",
    ),
    Site(
        "fastlege",
        "Lade legekontor (fastlege)",
        f"urn:oid:{ROOT}.3",
        "fastlege",
        f"{ROOT}.3.1",
        "Lade legekontor (fiktivt)",
        "987654325",
    ),
)


class Service:
    """One community's ``xds serve`` application under uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, config: Config) -> None:
        import uvicorn

        from xds.server import build_app

        self.config = config
        self.app = build_app(config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=config.server.port,
                log_level="warning",
                **config.server.uvicorn_protocol(),  # type: ignore[arg-type]
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service on port {self.config.server.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@dataclass
class Federation:
    """The three communities: their configurations, keys and (once started) services."""

    directory: Path
    keys: KeySet
    configs: dict[str, Config]
    services: dict[str, Service] = field(default_factory=dict)

    def url(self, site: str, path: str) -> str:
        return f"http://127.0.0.1:{self.configs[site].server.port}{path}"

    def start(self) -> None:
        for key, config in self.configs.items():
            self.services[key] = Service(config)
            self.services[key].start()

    def stop(self, site: str | None = None) -> None:
        for key in [site] if site else list(self.services):
            self.services.pop(key).stop()

    def requester(self, institution: str, attributes: TrustAttributes) -> consumer.Requester:
        return consumer.Requester.from_keys(self.keys.directory, institution, attributes, ISSUER)


def configure(
    directory: Path,
    ports: dict[str, int],
    *,
    database_urls: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> Federation:
    """Keys and one configuration per community (each knows the other two in its directory)."""
    keys = init_keys(directory / "keys", [s.key for s in SITES] + ["helsenorge"])
    configs: dict[str, Config] = {}
    for site in SITES:
        cfg = Config()
        cfg.server.port = ports[site.key]
        cfg.server.data_dir = str(directory / site.key)
        cfg.registry.database_url = (database_urls or {}).get(site.key, "")
        cfg.registry.home_community_id = site.home
        cfg.server.public_url = f"http://127.0.0.1:{ports[site.key]}"
        cfg.trust.mode = "required"
        # the consumer's assertion travels on through the gateways: the federation shares one audience
        cfg.trust.audience = AUDIENCE
        cfg.trust.repository_mode = "optional"  # the institution's own systems publish (ITI-41) inside
        cfg.trust.ca_file = str(keys.ca.cert_path)
        cfg.issuers = [IssuerConfig(name=ISSUER, cert=str(keys.idp.cert_path))]
        cfg.trust.sign_cert = str(keys.institutions[site.key].cert_path)
        cfg.trust.sign_key = str(keys.institutions[site.key].key_path)
        cfg.repositories = [RepositoryConfig(name=site.repository, unique_id=site.repository_oid)]
        cfg.communities = [
            CommunityConfig(
                home_community_id=other.home,
                name=other.name,
                registry_url=f"http://127.0.0.1:{ports[other.key]}/xca/query",
                repository_url=f"http://127.0.0.1:{ports[other.key]}/xca/retrieve",
                ca_file=str(keys.ca.cert_path),
                timeout_s=timeout_s,
            )
            for other in SITES
            if other.key != site.key
        ]
        configs[site.key] = cfg
    return Federation(directory, keys, configs)


# --- documents ---------------------------------------------------------------------------------------
@dataclass
class Published:
    site: str
    title: str
    unique_id: str
    repository_oid: str
    home: str
    class_code: str
    confidentiality: str


LAB_REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Synthetic lab report (Svarrapport-like), St. Olavs hospital, Avdeling for medisinsk biokjemi -->
<Svarrapport>
  <Pasient fnr="{patient}"/>
  <Analyse kode="NPU02319" navn="Hemoglobin" verdi="13.9" enhet="g/dL" referanse="11.7-15.3"/>
  <Analyse kode="NPU19748" navn="CRP" verdi="42" enhet="mg/L" referanse="&lt;5" flagg="H"/>
  <Analyse kode="NPU18016" navn="Kreatinin" verdi="71" enhet="umol/L" referanse="45-90"/>
</Svarrapport>
"""
RADIOLOGY_REPORT = """Radiologisvar - St. Olavs hospital, Klinikk for bildediagnostikk
Pasient: {patient}
Undersøkelse: Rtg. thorax to plan
Funn: Fortetning i høyre underlapp, forenlig med pneumoni. Ingen pleuravæske.
Konklusjon: Høyresidig pneumoni. Kontroll etter behandling anbefales.
"""
NORS_NOTE = """Samtalenotat (sperret, NORS) - St. Olavs hospital
Pasient: {patient}
Dette dokumentet er sperret og skal aldri utleveres fra virksomheten.
"""
GP_LAB = """Hurtigtest - Lade legekontor
Pasient: {patient}
CRP 38 mg/L (hurtigtest)
"""
MUNICIPAL_NOTE = """Journalnotat - Trondheim kommune, hjemmetjenesten
Pasient: {patient}
Besøk: Pasienten har feber og hoste. Fastlege kontaktet.
"""

# site, file name, title, class, type, confidentiality, text
DOCUMENTS = (
    ("stolav", "labsvar.xml", "Laboratoriesvar - blodprøver", "C00-1", "C01-2", "N", LAB_REPORT),
    ("stolav", "radiologisvar.txt", "Radiologisvar - Rtg. thorax", "E00-1", "E01-2", "N", RADIOLOGY_REPORT),
    ("stolav", "samtalenotat.txt", "Samtalenotat", "C00-1", "C01-2", "NORS", NORS_NOTE),
    ("fastlege", "hurtigtest.txt", "CRP hurtigtest", "C00-1", "C01-2", "N", GP_LAB),
    ("kommune", "journalnotat.txt", "Journalnotat hjemmetjenesten", "A00-1", "A03-2", "N", MUNICIPAL_NOTE),
)


def publish(federation: Federation, patient: str, work: Path) -> list[Published]:
    """Each community's own system provides its documents (ITI-41) to its repository."""
    from xds.client import RepositoryClient, describe_files

    sites = {s.key: s for s in SITES}
    number = patient.split("^", 1)[0]
    out = []
    for key, name, title, class_code, type_code, conf, text in DOCUMENTS:
        site = sites[key]
        path = work / key / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(patient=number), encoding="utf-8")
        submission, files = describe_files(
            [path], patient, class_code=class_code, type_code=type_code, confidentiality=conf, title=title
        )
        _from_institution(submission, site)
        with RepositoryClient(federation.url(key, f"/repository/{site.repository}")) as client:
            outcome = client.provide_and_register(submission, files)
        if not outcome.ok:
            problems = "; ".join(f"{e.code}: {e.context}" for e in outcome.errors)
            raise RuntimeError(f"publishing {title} at {site.name} failed: {problems}")
        doc = submission.documents[0]
        out.append(Published(key, title, doc.unique_id, site.repository_oid, site.home, class_code, conf))
    return out


def _from_institution(submission: Submission, site: Site) -> None:
    """Author institution of every object: the community's own (XON with its organisation number)."""
    xon = f"{site.organisation}^^^^^&{samples.ORGNR_OID}&ISO^^^^{site.orgnr}"
    for obj in submission.objects:
        for c in getattr(obj, "classifications", []):
            if c.classification_scheme in (v.DE_AUTHOR, v.SS_AUTHOR):
                c.slots = [s for s in c.slots if s.name != "authorInstitution"] + [
                    Slot("authorInstitution", [xon])
                ]


# --- the people ----------------------------------------------------------------------------------------
def doctor(patient: str, **over: str) -> TrustAttributes:
    """A municipal doctor in Trondheim with a care relationship to ``patient`` (TREAT)."""
    values: dict[str, str] = dict(
        subject_id="Ingrid Hansen",
        hpr_number="9144900",
        role="LE",
        organisation="Trondheim kommune",
        organisation_id="942110464",
        child_organisation_name="Hjemmetjenesten Lade",
        purpose_of_use="TREAT",
        healthcare_service="Hjemmesykepleie",
        purpose_of_use_details="Oppfølging av pneumoni",
        decision_ref="vedtak-2026-1142",
        resource_id=patient,
    )
    values.update(over)
    return TrustAttributes(**values)  # type: ignore[arg-type]


def stranger(patient: str) -> TrustAttributes:
    """A doctor in the same office without a care relationship (no healthcare service, no decision)."""
    return doctor(
        patient,
        subject_id="Per Berg",
        hpr_number="9144901",
        healthcare_service="",
        purpose_of_use_details="",
        decision_ref="",
    )


def citizen(patient: str) -> TrustAttributes:
    """The patient, through the citizen portal, reading their own record."""
    number = patient.split("^", 1)[0]
    return TrustAttributes(
        subject_id=number,
        organisation="Helsenorge",
        organisation_id="994598759",
        purpose_of_use="PATRQT",  # patient requested: a citizen (xds.trust.policy)
        resource_id=patient,
    )


# --- the story -----------------------------------------------------------------------------------------
@dataclass
class Chapter:
    """One step of the story and what the system answered (read by the tests)."""

    title: str
    answer: consumer.Answer
    documents: list[consumer.Document] = field(default_factory=list)


def story(
    federation: Federation,
    patient: str,
    other: str,
    published: list[Published],
    work: Path,
    say: Callable[[str], None] = print,
) -> list[Chapter]:
    """Tell the story step by step; every step is a real request over HTTP."""
    ig_query = federation.url("kommune", "/ig/registry")
    ig_retrieve = federation.url("kommune", "/ig/repository")
    chapters: list[Chapter] = []
    query = consumer.adhoc_query_request(
        "FindDocuments", consumer.standard_parameters("FindDocuments", patient=patient)
    )

    say(f"\n1. Dr. Ingrid Hansen (Trondheim kommune, HPR 9144900) treats patient {patient.split('^')[0]}.")
    say("   Her journal asks the municipality's initiating gateway for the patient's documents (ITI-18),")
    say("   with a signed XUA assertion: purpose TREAT, care relationship 'Hjemmesykepleie'.")
    ingrid = federation.requester("kommune", doctor(patient))
    answer = consumer.stored_query(ig_query, query, requester=ingrid)
    chapters.append(Chapter("find", answer))
    say(f"   The gateway asked St. Olavs and the fastlege office in parallel (ITI-38): {answer.short_status}")
    say(_indent(consumer.table(consumer.rows(answer.objects))))

    wanted = [p for p in published if p.site == "stolav" and p.confidentiality == "N"]
    say("\n2. She retrieves the lab result and the radiology report (ITI-43 → ITI-39 to St. Olavs).")
    answer, docs = consumer.retrieve(
        ig_retrieve,
        [(p.home, p.repository_oid, p.unique_id) for p in wanted],
        work / "retrieved",
        requester=federation.requester("kommune", doctor(patient)),
    )
    chapters.append(Chapter("retrieve", answer, docs))
    for d in docs:
        say(f"   {d.unique_id} ({d.mime_type}, {d.path.stat().st_size} bytes) -> {d.path}")
    say(f"   {answer.short_status}")

    say("\n3. Dr. Per Berg, in the same office, has no care relationship with the patient: his assertion")
    say("   names no healthcare service and no decision reference.")
    per = federation.requester("kommune", stranger(patient))
    answer = consumer.stored_query(ig_query, query, requester=per)
    chapters.append(Chapter("refused", answer))
    say(f"   His query: {answer.short_status}, {len(answer.objects)} documents released.")
    lab = wanted[0]
    answer, docs = consumer.retrieve(
        ig_retrieve, [(lab.home, lab.repository_oid, lab.unique_id)], work / "retrieved", requester=per
    )
    chapters.append(Chapter("refused-retrieve", answer, docs))
    detail = answer.fault or "; ".join(f"{e.code}: {e.context}" for e in answer.errors)
    say(f"   Asking for the lab result by its id: {detail}")

    nors = next(p for p in published if p.confidentiality == "NORS")
    say(f"\n4. The NORS (sperret) note {nors.unique_id} never leaves St. Olavs:")
    answer, docs = consumer.retrieve(
        ig_retrieve,
        [(nors.home, nors.repository_oid, nors.unique_id)],
        work / "retrieved",
        requester=federation.requester("kommune", doctor(patient)),
    )
    chapters.append(Chapter("nors", answer, docs))
    detail = answer.fault or "; ".join(f"{e.code}: {e.context}" for e in answer.errors) or answer.short_status
    say(f"   not in any answer above, and asked for by its id: {detail}")

    say("\n5. The patient reads their own record through Helsenorge (the citizen's own assertion).")
    answer = consumer.stored_query(
        ig_query, query, requester=federation.requester("helsenorge", citizen(patient))
    )
    chapters.append(Chapter("citizen", answer))
    say(f"   {answer.short_status}")
    say(_indent(consumer.table(consumer.rows(answer.objects))))
    return chapters


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def query_examples(federation: Federation, patient: str, published: list[Published]) -> list[list[str]]:
    """``xds query`` command lines (argv after ``xds``) that ask as Dr. Hansen does in the story."""
    lab = published[0]
    ig = federation.url("kommune", "/ig/registry")
    who = ["--keys", str(federation.keys.directory), "--institution", "kommune", "--subject", "Ingrid Hansen"]
    who += ["--hpr", "9144900", "--role", "LE", "--org-id", "942110464", "--care", "Hjemmesykepleie"]
    return [
        ["query", "FindDocuments", "--patient", patient, "--url", ig, *who],
        ["query", "GetDocuments", "--unique-id", lab.unique_id, "--home", lab.home, "--url", ig, *who]
        + ["--for", patient, "--xml"],
    ]


def how_to(federation: Federation, patient: str, published: list[Published]) -> str:
    import shlex

    unsigned = federation.directory / "query.xml"
    body = consumer.adhoc_query_request(
        "FindDocuments", consumer.standard_parameters("FindDocuments", patient=patient)
    )
    unsigned.write_bytes(
        build_request(v.ACTION_XCA_QUERY, body, to=federation.url("stolav", "/xca/query"))[0]
    )
    examples = [f"  xds {shlex.join(argv)}" for argv in query_examples(federation, patient, published)]
    return "\n".join(
        [
            "\nThe communities keep running:",
            *(
                f"  {site.name:40} {federation.url(site.key, '/xca/query')}  (initiating: "
                f"{federation.url(site.key, '/ig/registry')})"
                for site in SITES
            ),
            "\nAsk them yourself as Dr. Hansen (from a checkout: ./dev xds query …), for example:",
            *examples,
            "  Without a signed assertion the gateways refuse (the trust model is required):",
            f"  curl -s -H 'Content-Type: application/soap+xml' --data-binary @{unsigned} "
            f"{federation.url('stolav', '/xca/query')}",
            f"  curl -s '{federation.url('stolav', '/xca/query')}?wsdl'",
            "\nCtrl-C stops them.",
        ]
    )


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(directory: str | None = None, base_port: int = 8081) -> int:
    """Start, publish, tell the story, keep serving until Ctrl-C."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _stop)  # stopped by a service manager: clean up as for Ctrl-C
    work = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="xds-demo-"))
    if directory and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    ports = {site.key: base_port + i for i, site in enumerate(SITES)}
    print(f"xds demo: three communities in {work}")
    federation = configure(work, ports)
    federation.start()
    try:
        for site in SITES:
            print(f"  {site.name}: {site.home} at {federation.url(site.key, '')}")
        rng = random.Random()
        patient = samples.patient_cx(samples.person_number(rng))
        other = samples.patient_cx(samples.person_number(rng))
        published = publish(federation, patient, work / "documents")
        print(f"\nPublished for patient {patient.split('^')[0]} (synthetic):")
        for p in published:
            print(
                f"  {federation.configs[p.site].communities and p.site:9} {p.title} [{p.class_code}, {p.confidentiality}]"
            )
        story(federation, patient, other, published, work)
        print(how_to(federation, patient, published))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nxds demo: stopping")
    finally:
        federation.stop()
        if not directory:  # a temporary folder: its keys and data go with the demo (--dir keeps them)
            shutil.rmtree(work, ignore_errors=True)
    return 0
