"""The WSDLs and schemas the server describes itself with: shipped in the package, served (``?wsdl``,
``?xsd=NAME``) so that a client with no route out loads them wholly from the server."""

from __future__ import annotations

import httpx
from lxml import etree
from support import RunningServer, zeep_every_operation

from xds import safexml, schemas

NS_XSD = "{http://www.w3.org/2001/XMLSchema}"


def test_a_zeep_client_with_no_route_out_loads_both_wsdls_and_calls_every_operation(
    server: RunningServer,
) -> None:
    operations, fetched = zeep_every_operation(server.url)
    assert sorted(operations) == [
        "DocumentRegistry_DeleteDocumentSet",
        "DocumentRegistry_RegisterDocumentSet-b",
        "DocumentRegistry_RegistryStoredQuery",
        "DocumentRegistry_RestrictedUpdateDocumentSet",
        "DocumentRegistry_UpdateDocumentSet",
        "DocumentRepository_ProvideAndRegisterDocumentSet-b",
        "DocumentRepository_RemoveDocuments",
        "DocumentRepository_RetrieveDocumentSet",
    ]
    assert f"{server.url}/registry?wsdl" in fetched and f"{server.url}/registry?xsd=xml.xsd" in fetched
    assert f"{server.url}/repository/default?xsd=XDS.b_DocumentRepository.xsd" in fetched


def test_every_location_in_a_served_wsdl_or_schema_points_back_at_the_endpoint(server: RunningServer) -> None:
    endpoint = f"{server.url}/repository/default"
    pending, seen = [f"{endpoint}?wsdl"], set()
    while pending:
        url = pending.pop()
        seen.add(url)
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
        root = safexml.parse(response.content)
        for el in root.iter(f"{NS_XSD}import", f"{NS_XSD}include"):
            location = el.get("schemaLocation")
            assert location is not None and location.startswith(f"{endpoint}?xsd="), location
            if location not in seen:
                pending.append(location)
    assert len(seen) == 1 + len(schemas.schema_files())  # the WSDL and every shipped schema


def test_served_schemas_are_the_shipped_files_but_for_their_locations(server: RunningServer) -> None:
    for name, path in schemas.schema_files().items():
        served = httpx.get(f"{server.url}/registry?xsd={name}", timeout=10).content
        original = path.read_bytes()
        locations = [el.get("schemaLocation") for el in etree.fromstring(original).iter(f"{NS_XSD}import")]
        for location in locations:
            original = original.replace(f'"{location}"'.encode(), b'"X"')
        for location in [el.get("schemaLocation") for el in etree.fromstring(served).iter(f"{NS_XSD}import")]:
            served = served.replace(f'"{location}"'.encode(), b'"X"')
        assert served == original, name


def test_an_unknown_schema_name_or_a_path_is_not_found(server: RunningServer) -> None:
    for name in ("nope.xsd", "../registry.wsdl", "ihe-iti/w3/xml.xsd", "/etc/passwd"):
        response = httpx.get(f"{server.url}/registry", params={"xsd": name}, timeout=10)
        assert response.status_code == 404, name


def test_a_host_header_cannot_break_out_of_the_location_attribute(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/registry?wsdl", headers={"Host": 'x"><evil/>'}, timeout=10)
    if response.status_code == 200:  # uvicorn may refuse such a Host outright
        root = safexml.parse(response.content)
        assert not list(root.iter("evil"))


def test_every_shipped_wsdl_imports_only_shipped_schemas_and_is_served_whole() -> None:
    """Each WSDL in wsdl/ resolves from disk (relative locations to shipped files) and, served,
    names only the endpoint it was fetched from."""
    wsdls = sorted(schemas.wsdl_dir().glob("*.wsdl"))
    assert {p.name for p in wsdls} >= {"registry.wsdl", "repository.wsdl"}
    for path in wsdls:
        for el in etree.parse(str(path)).iter(f"{NS_XSD}import", f"{NS_XSD}include"):
            location = el.get("schemaLocation", "")
            assert (path.parent / location).resolve().is_file(), f"{path.name}: {location}"
        endpoint = "http://192.0.2.1:8080/some/endpoint"
        served = safexml.parse(schemas.served_wsdl(path.name, endpoint) or b"")
        for el in served.iter(f"{NS_XSD}import", f"{NS_XSD}include"):
            assert el.get("schemaLocation", "").startswith(f"{endpoint}?xsd="), path.name


def test_with_public_url_the_served_addresses_are_the_public_ones(tmp_path, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """Behind a proxy (or with a forged Host header) the WSDL still names ``[server] public_url`` +
    path: the address whose wsa:To the trust model accepts, and no other host's."""
    from support import free_port, make_config

    config = make_config(tmp_path / "data", database_url)
    config.server.port = free_port()
    config.server.public_url = "https://xds.helse.example:8443/"
    with RunningServer(config) as running:
        for path in ("/registry", "/repository/default", "/xca/query"):
            response = httpx.get(f"{running.url}{path}?wsdl", headers={"Host": "evil.example"}, timeout=10)
            if response.status_code == 404:  # no responding gateway in this configuration
                continue
            root = safexml.parse(response.content)
            addresses = [el.get("location") for el in root.iter() if el.tag.endswith("}address")]
            assert addresses and set(addresses) == {f"https://xds.helse.example:8443{path}"}, addresses
            for el in root.iter(f"{NS_XSD}import", f"{NS_XSD}include"):
                assert el.get("schemaLocation", "").startswith(f"https://xds.helse.example:8443{path}?xsd=")
