"""Helpers shared by the test suites: the NIST test kit, fresh databases, a running server.

The schemas and WSDLs ship with the project (wsdl/); the NIST XDS test kit does not. It is looked
for at ``$XDS_SHARED_DIR/conformance/nist-testkit`` (default ``../shared`` beside the checkout).
Outside CI a missing kit skips the tests that need it, with the reason; in CI it fails them.
``XDS_TEST_DATABASE_URL`` (a PostgreSQL URL) makes every fresh database a new PostgreSQL database
instead of a SQLite file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("XDS_SHARED_DIR", REPO.parent / "shared")).resolve()


KIT_SOURCE = (
    "the public-domain NIST XDS Toolkit (github.com/usnistgov/iheos-toolkit2, folder "
    "xdstools2/src/main/webapp/toolkitx/testkit)"
)
KIT_SKIP = "needs the NIST XDS test kit"


def kit_dir() -> Path:
    return shared_dir() / "conformance" / "nist-testkit"


def require_kit() -> Path:
    """The NIST test kit's folder, or skip (outside CI) / fail (in CI) when it is missing."""
    path = kit_dir()
    if not path.is_dir():
        message = f"{KIT_SKIP}: {path} is missing (set XDS_SHARED_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def postgres_admin_url() -> str | None:
    return os.environ.get("XDS_TEST_DATABASE_URL") or None


@contextlib.contextmanager
def new_database(tmp_dir: Path) -> Iterator[str]:
    """A fresh, empty registry database: SQLite in tmp_dir, or a new PostgreSQL database."""
    admin = postgres_admin_url()
    if admin is None:
        yield f"sqlite:///{tmp_dir / 'registry.db'}"
        return
    name = f"xds_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens, for as long as the block runs: bound and never
    listening, so a connection to it is refused, and no server the test starts meanwhile is given
    it (a port from :func:`free_port` is free again at once, and was, now and then, the test's own
    server's)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


class RunningServer:
    """``xds serve``'s application under uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        import threading

        import uvicorn

        from xds.server import build_app

        self.config = config
        self.app = build_app(config)
        self.port = config.server.port
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
                **config.server.uvicorn_protocol(),
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.server.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def make_config(data_dir: Path, database_url: str, **registry: object):  # type: ignore[no-untyped-def]
    from xds.config import Config

    cfg = Config()
    cfg.server.data_dir = str(data_dir)
    cfg.server.port = free_port()
    cfg.registry.database_url = database_url
    cfg.registry.mllp_port = free_port()
    for key, value in registry.items():
        setattr(cfg.registry, key, value)
    return cfg


def require_trust(cfg, keys, issuer: str) -> None:  # type: ignore[no-untyped-def]
    """``[trust] mode = "required"`` under ``keys``' CA, with ``keys``' identity provider as the
    assertion issuer ``issuer``."""
    from xds.config import IssuerConfig

    cfg.trust.mode = "required"
    cfg.trust.ca_file = str(keys.ca.cert_path)
    cfg.issuers = [IssuerConfig(issuer, str(keys.idp.cert_path))]


def zeep_send(client, service, operation: str, payload, **placeholder):  # type: ignore[no-untyped-def]
    """Call ``operation`` with zeep, its envelope carrying ``payload`` (an lxml element) as the body.

    zeep builds the envelope from the official WSDL (SOAP 1.2 binding, wsa:Action, MessageID, To) and
    parses the answer with the WSDL's schemas. The body is put in as an element because the ebRIM
    registry object list is an XSD substitution group, which zeep cannot render from Python values;
    ``placeholder`` gives zeep the minimal arguments it needs to build the operation's envelope.
    Returns the raw HTTP response and zeep's parsed result.
    """
    from xds.metadata import vocabulary as v

    binding = service._binding
    options = service._binding_options
    envelope, http_headers = binding._create(operation, (), placeholder, client=client, options=options)
    body = envelope.find(f"{{{v.NS_SOAP12}}}Body")
    body[:] = [payload]
    response = client.transport.post_xml(options["address"], envelope, http_headers)
    result = (
        binding.process_reply(client, binding.get(operation), response)
        if response.status_code == 200
        else None
    )
    return response, result


KIT_MISSING = "(kit missing)"


def kit_test_ids(collection: str) -> list[str]:
    """A NIST kit collection's test ids; one placeholder when the kit is absent (it then skips/fails)."""
    from xds.conformance.testplan import load_collection

    path = kit_dir()
    return load_collection(path, collection) if path.is_dir() else [KIT_MISSING]


@contextlib.contextmanager
def kit_session(tmp: Path, *, xua: bool = False):  # type: ignore[no-untyped-def]
    """A replay session against a deployment started for it (fresh database, plain IHE profile,
    HTTPS with client certificates); ``xua``: the deployment requires the trust model and trusts
    the replay's identity provider."""
    from xds.conformance.deployment import local_deployment
    from xds.conformance.runner import Session
    from xds.conformance.xua import XuaIdentity

    kit = require_kit()
    identity = XuaIdentity.make(tmp / "keys", kit) if xua else None
    with new_database(tmp) as url, local_deployment(url, str(tmp / "data"), xua=identity, tls=True) as target:
        yield Session(kit, target, xua=identity)


def run_bench(*argv: str) -> int:
    """``xds bench ARGV...`` in this process (its output goes to stdout); the exit status."""
    import argparse

    from xds import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(list(argv)))


def local_only_transport(base_url: str):  # type: ignore[no-untyped-def]
    """A zeep Transport that fetches and posts only under ``base_url``; any other URL (another host,
    a file) raises, as on a hospital network with no route out. ``.fetched`` lists what it loaded."""
    import zeep

    class LocalOnly(zeep.Transport):  # type: ignore[misc]
        fetched: list[str] = []  # noqa: RUF012

        def load(self, url: str) -> bytes:
            if not url.startswith(base_url + "/"):
                raise ConnectionRefusedError(f"no route to {url}")
            self.fetched.append(url)
            return super().load(url)  # type: ignore[no-any-return]

        def post(self, address: str, message, headers):  # type: ignore[no-untyped-def]
            if not address.startswith(base_url + "/"):
                raise ConnectionRefusedError(f"no route to {address}")
            return super().post(address, message, headers)

    return LocalOnly()


def _zeep_find_documents(service, history, patient: str):  # type: ignore[no-untyped-def]
    """FindDocuments (LeafClass) through zeep; the DocumentEntries of the raw answer."""
    from xds.metadata import ebrim
    from xds.metadata import vocabulary as v

    def slot(name: str, value: str) -> dict[str, object]:
        return {"name": name, "ValueList": {"_value_1": [{"Value": value}]}}

    result = service.DocumentRegistry_RegistryStoredQuery(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={
            "id": v.SQ_FIND_DOCUMENTS,
            "Slot": [
                slot("$XDSDocumentEntryPatientId", f"'{patient}'"),
                slot("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
        },
    )
    assert result.status == v.RESPONSE_SUCCESS
    answer = history.last_received["envelope"].find(f"{{{v.NS_SOAP12}}}Body")[0]
    return ebrim.parse_registry_object_list(answer.find(f"{{{v.NS_RIM}}}RegistryObjectList")).documents


def zeep_every_operation(base_url: str, repository: str = "default") -> tuple[list[str], list[str]]:
    """Load ``/registry?wsdl`` and ``/repository/<name>?wsdl`` from ``base_url`` with zeep, fetching
    nothing from any other place, and call every XDS.b operation they declare (the registry's ITI-57,
    ITI-92 and ITI-62 operations are called in registry/test_zeep_lifecycle.py). Returns the
    operations declared and the URLs zeep loaded.

    ``strict=False`` (zeep.Settings): zeep cannot read the members of the ebRIM substitution group
    rim:Identifiable (the objects of a LeafClass answer's RegistryObjectList) in strict mode."""
    import base64

    import zeep
    from lxml import etree
    from zeep.plugins import HistoryPlugin

    from xds import samples
    from xds.metadata import ebrim
    from xds.metadata import vocabulary as v

    transport = local_only_transport(base_url)
    settings = zeep.Settings(strict=False)
    history = HistoryPlugin()
    registry = zeep.Client(
        f"{base_url}/registry?wsdl", transport=transport, settings=settings, plugins=[history]
    )
    reg = registry.bind("DocumentRegistry_Service", "DocumentRegistry_Port_Soap12")
    sample = samples.submission(documents=2)
    op = "DocumentRegistry_RegisterDocumentSet-b"
    placeholder = {"RegistryObjectList": {"Identifiable": []}}
    response, result = zeep_send(
        registry, reg, op, ebrim.submit_objects_request(sample.submission), **placeholder
    )
    assert response.status_code == 200 and result.status == v.RESPONSE_SUCCESS, response.text
    assert len(_zeep_find_documents(reg, history, sample.patient)) == 2

    repo = zeep.Client(f"{base_url}/repository/{repository}?wsdl", transport=transport, settings=settings)
    rep = repo.bind("DocumentRepository_Service", "DocumentRepository_Port_Soap12")
    provided = samples.submission(documents=1)
    for d in provided.documents:  # the repository computes these
        d.slots = [x for x in d.slots if x.name not in ("hash", "size", "repositoryUniqueId")]
    content = b"%PDF-1.4 epikrise " + uuid.uuid4().hex.encode() + b" %%EOF"
    body = etree.Element(f"{{{v.NS_XDSB}}}ProvideAndRegisterDocumentSetRequest")
    body.append(ebrim.submit_objects_request(provided.submission))
    document = etree.SubElement(body, f"{{{v.NS_XDSB}}}Document", id=provided.documents[0].id)
    document.text = base64.b64encode(content).decode()
    op = "DocumentRepository_ProvideAndRegisterDocumentSet-b"
    document_placeholder = [{"_value_1": b"", "id": "placeholder"}]
    response, result = zeep_send(
        repo, rep, op, body, SubmitObjectsRequest=placeholder, Document=document_placeholder
    )
    assert response.status_code == 200 and result.status == v.RESPONSE_SUCCESS, response.text

    [entry] = _zeep_find_documents(reg, history, provided.patient)
    wanted = [{"RepositoryUniqueId": entry.repository_unique_id, "DocumentUniqueId": entry.unique_id}]
    result = rep.DocumentRepository_RetrieveDocumentSet(DocumentRequest=wanted)
    assert result.RegistryResponse.status == v.RESPONSE_SUCCESS
    assert [d.Document for d in result.DocumentResponse] == [content]
    result = rep.DocumentRepository_RemoveDocuments(DocumentRequest=wanted)
    assert result.status == v.RESPONSE_SUCCESS, result
    result = rep.DocumentRepository_RetrieveDocumentSet(DocumentRequest=wanted)
    assert result.RegistryResponse.status != v.RESPONSE_SUCCESS
    operations = [
        name
        for client in (registry, repo)
        for service in client.wsdl.services.values()
        for port in service.ports.values()
        for name in port.binding._operations
    ]
    return operations, list(transport.fetched)
