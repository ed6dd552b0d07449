"""``xds serve``: every configured actor in one ASGI application (Starlette on uvicorn)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from xds.config import Config
from xds.service_log import RequestLog, configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from xds.audit.observer import EndpointAuditor
    from xds.audit.trail import AuditTrail
    from xds.gateway.initiating import InitiatingGateway
    from xds.registry.service import RegistryService
    from xds.repository.service import RepositoryService
    from xds.trust.enforcement import PolicyEnforcementPoint
    from xds.trust.wssecurity import TrustRoles

CONFIG_ENV = "XDS_SERVE_CONFIG_JSON"


def build_app(config: Config, *, prepare: bool = True) -> Starlette:
    """The ASGI application: the registry at /registry, each repository at /repository/<name>
    (the first also at /repository), each SOAP endpoint behind its trust policy."""
    from xds.database import set_lock_wait, use_threads
    from xds.operations.metrics import MetricsMiddleware
    from xds.registry.service import RegistryService

    use_threads(config.server.database_threads)
    set_lock_wait(config.registry.lock_wait_s)
    Path(config.server.data_dir).mkdir(parents=True, exist_ok=True)
    registry = RegistryService(config)
    repositories = build_repositories(config, registry)
    if prepare:
        registry.prepare()
        for repo in repositories:
            repo.recover()
    gateway_routes, initiating = build_gateways(config, registry, repositories)
    auditing = Auditing.build(config, registry, initiating, prepare=prepare)
    routes = soap_routes(config, registry, repositories, auditing, gateway_routes)
    if config.server.bench_floor:
        routes += bench_routes(registry, repositories)
    app = Starlette(
        routes=routes,
        lifespan=_lifespan(registry, repositories, initiating, auditing, prepare=prepare),
        middleware=[Middleware(MetricsMiddleware), Middleware(RequestLog)],
    )
    app.state.registry = registry
    app.state.public_url = config.server.public_url.rstrip("/")  # the served WSDLs' addresses
    app.state.audit_trail = auditing.trail
    app.state.audit_engine = auditing.engine
    app.state.repositories = {r.name: r for r in repositories}
    return app


@dataclass
class Auditing:
    """The audit trail of one process: where its records are stored, the trail, the endpoints' hook."""

    engine: Engine | None = None
    trail: AuditTrail | None = None
    auditor: EndpointAuditor | None = None

    @classmethod
    def build(
        cls,
        config: Config,
        registry: RegistryService,
        initiating: InitiatingGateway | None,
        *,
        prepare: bool,
    ) -> Auditing:
        from xds.operations.audit_delivery import audit_trail

        audit_engine = None
        if config.audit.database:  # on SQLite a file of its own: audit writes never wait for the registry's
            from xds.database.audit_store import move_records, open_audit_engine

            registry_url = config.registry.url(config.server.data_dir)
            # (read here, for the access log; written by the delivery process, whose checkpointer
            # copies its log into the file at the delivery's low priority, not in a serving thread)
            audit_engine = open_audit_engine(
                registry_url, registry.engine, prepare=prepare, checkpoints=False
            )
            if prepare:
                move_records(registry.engine, audit_engine)
        trail = audit_trail(config, audit_engine)  # its events delivered by a child process
        if trail is None:
            return cls(audit_engine)
        from xds.audit.observer import EndpointAuditor, default_source

        auditor = EndpointAuditor(
            trail,
            default_source(config.audit.source_id, config.audit.enterprise_site_id),
            owners=lambda uids: document_owners(registry.engine, uids),
            home_community_id=config.registry.home_community_id,
        )
        registry.feed_observer = auditor.feed
        if initiating is not None:  # what the initiating gateway asks, audited as it asks it
            from xds.gateway.audit import RequestAudit

            initiating.audit = RequestAudit(trail, auditor.source)
        return cls(audit_engine, trail, auditor)

    def close(self, registry_engine: Engine) -> None:
        if self.trail is not None:
            self.trail.stop()
        if self.engine is not None and self.engine is not registry_engine:
            self.engine.dispose()


def _lifespan(
    registry: RegistryService,
    repositories: list[RepositoryService],
    initiating: InitiatingGateway | None,
    auditing: Auditing,
    *,
    prepare: bool,
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if not prepare:  # a worker (perhaps restarted alone): settle what a dead one left
            from anyio import to_thread

            for repo in repositories:
                await to_thread.run_sync(repo.recover_peers)
        if auditing.trail is not None:
            auditing.trail.start()
        await registry.start_feed()
        try:
            yield
        finally:
            await registry.stop_feed()
            if initiating is not None:
                await initiating.aclose()
            auditing.close(registry.engine)
            registry.engine.dispose()

    return lifespan


def soap_routes(
    config: Config,
    registry: RegistryService,
    repositories: list[RepositoryService],
    auditing: Auditing,
    gateway_routes: list[Route],
) -> list[Route]:
    """/registry, each repository, the operator's endpoints, the access log and the gateways' routes,
    every SOAP endpoint with its trust policy and the audit hook."""
    from xds.operations.routes import operations_routes

    registry_endpoint = registry.endpoint()
    registry_endpoint.security = trust_policy(config, registry.engine, "registry")
    registry_endpoint.observer = auditing.auditor
    routes = [
        Route("/registry", SoapRoute(registry_endpoint, "registry.wsdl")),
        *operations_routes(config, registry, repositories),  # /health, /ready, /metrics
    ]
    if config.audit.database and auditing.engine is not None:
        routes.append(Route("/audit/access-log", access_log_route(config, auditing.engine), methods=["GET"]))
    repository_security = trust_policy(config, registry.engine, "repository")
    for i, repo in enumerate(repositories):
        endpoint = repo.endpoint(
            config.server.max_body_mb * 2**20,
            config.server.max_document_mb * 2**20,
            config.server.read_timeout_s,
        )
        endpoint.security = repository_security
        endpoint.observer = auditing.auditor
        route = SoapRoute(endpoint, "repository.wsdl")
        routes.append(Route(f"/repository/{repo.name}", route))
        if i == 0:
            routes.append(Route("/repository", route))
    for gateway in gateway_routes:  # XCA: ITI-38/39 answered, ITI-18/43 taken in by the initiating side
        soap_endpoint = getattr(gateway.endpoint, "endpoint", None)
        if hasattr(soap_endpoint, "observer"):
            soap_endpoint.observer = auditing.auditor  # type: ignore[union-attr]
    return routes + gateway_routes


def bench_routes(registry: RegistryService, repositories: list[RepositoryService]) -> list[Route]:
    """``[server] bench_floor``: the floors ``xds bench`` measures against, on the same server."""
    from xds.bench.query import answer_floor
    from xds.bench.register import floor_route

    routes = [
        Route("/_bench/floor", floor_route(), methods=["POST"]),
        Route("/_bench/answer", answer_floor(registry.endpoint())),
    ]
    if repositories:
        from xds.bench.repository import floor_routes

        routes += floor_routes(repositories[0])
    return routes


def document_owners(engine: Engine, unique_ids: list[str]) -> dict[str, str]:
    """The patient of each registered document (by uniqueId): who a retrieve or a removal was about."""
    from sqlalchemy import select

    from xds.registry import schema as t

    d = t.documents.c
    with engine.connect() as conn:
        rows = conn.execute(select(d.unique_id, d.patient_id).where(d.unique_id.in_(unique_ids[:1000])))
        return {uid: pid for uid, pid in rows}


def access_log_route(config: Config, engine: Engine):  # type: ignore[no-untyped-def]
    """``GET /audit/access-log?patient=ID``: the citizen's access log, as JSON. Answered only for a
    request whose ``Authorization: SAML <base64 assertion>`` is a valid signed XUA assertion of that
    citizen (subject-id is the patient) or of the configured auditor role."""
    from xds.trust.access_log import AccessLogGuard

    roles = trust_roles(config)
    guard = AccessLogGuard(
        issuers=roles.issuers,
        audiences=roles.audiences,
        auditor_role=config.audit.auditor_role,
        citizen_purposes=config.access_policy().citizen_purposes,
    )

    async def route(request: Request) -> Response:
        from anyio import to_thread

        from xds.database.audit_store import access_log

        patient = request.query_params.get("patient", "").strip()
        refusal = await to_thread.run_sync(guard.refusal, request.headers.get("authorization", ""), patient)
        if refusal is not None:
            status, text = refusal
            return PlainTextResponse(text + "\n", status_code=status)
        rows = await to_thread.run_sync(access_log, engine, patient)
        body = json.dumps({"patient": patient, "accesses": rows}, ensure_ascii=False, indent=1)
        return Response(body, media_type="application/json")

    return route


def trust_policy(config: Config, engine: Engine, endpoint: str = "") -> PolicyEnforcementPoint | None:
    """The trust model's enforcement point for one endpoint (``registry`` / ``repository``), or None.

    ``[trust] mode`` applies everywhere unless ``registry_mode`` / ``repository_mode`` say otherwise.
    """
    tc = config.trust
    mode = {"registry": tc.registry_mode, "repository": tc.repository_mode}.get(endpoint, "") or tc.mode
    if mode == "off":
        return None
    from xds.database.replay import DatabaseReplayStore, replay_engine
    from xds.trust.enforcement import PolicyEnforcementPoint

    return PolicyEnforcementPoint(
        mode=mode,
        trust=trust_roles(config),
        replay=DatabaseReplayStore(replay_engine(engine)),
        public_url=config.server.public_url,
        bind_tls=tc.bind_tls,
        host_audience=not tc.audiences(config.server.public_url),
        signing=(Path(tc.sign_key).read_bytes(), Path(tc.sign_cert).read_bytes()) if tc.sign_key else None,
    )


def trust_roles(config: Config) -> TrustRoles:
    """Who is believed in which role: institutions (ca_file, communities), pinned assertion issuers."""
    import datetime as dt

    from xds.trust.assertion import DEFAULT_AUDIENCE
    from xds.trust.keys import TrustAnchors, load_certificates
    from xds.trust.wssecurity import TrustRoles

    tc = config.trust
    issuers: dict[str, list] = {}
    for issuer in config.issuers:
        if not issuer.name or not issuer.cert:
            raise ValueError("[[trust.issuer]] needs a name and a cert (PEM file)")
        issuers.setdefault(issuer.name, []).extend(load_certificates(issuer.cert))
    audiences = tc.audiences(config.server.public_url)
    if not audiences and tc.mode != "off":
        logging.getLogger("xds.trust").warning(
            "[trust] audience and [server] public_url are unset: assertions for the national audience %s "
            "or for the address a request's Host header names are accepted; set public_url",
            DEFAULT_AUDIENCE,
        )
    return TrustRoles(
        institutions=TrustAnchors(config.trust_anchor_files(), tc.crl_list()),
        issuers=issuers,
        audiences=audiences or (DEFAULT_AUDIENCE,),
        clock_skew=dt.timedelta(seconds=tc.clock_skew_s),
        max_timestamp_lifetime=dt.timedelta(seconds=tc.max_timestamp_lifetime_s),
        max_assertion_lifetime=dt.timedelta(seconds=tc.max_assertion_lifetime_s),
    )


def build_gateways(
    config: Config, registry: RegistryService, repositories: list[RepositoryService]
) -> tuple[list[Route], InitiatingGateway | None]:
    """XCA (ITI TF-2b §3.38-3.39): the responding gateway at /xca/query and /xca/retrieve when
    ``[registry] home_community_id`` is set, answered by this process's registry and repositories
    (their ITI-18 / ITI-43 handlers and so their authorisation) under ``[trust] mode``; the initiating gateway at
    /ig/registry and /ig/repository when the directory (``[[community]]``) has entries."""
    from xds.gateway.initiating import Identity, InitiatingGateway
    from xds.gateway.responding import RespondingGateway

    max_body = config.server.max_body_mb * 1024 * 1024
    routes: list[Route] = []
    home = config.registry.home_community_id
    if home:
        responding = RespondingGateway(
            home,
            registry.stored_query,
            {repo.unique_id: repo.retrieve for repo in repositories},
            documents_only=config.gateway.documents_only,
        )
        query, retrieve = responding.endpoint(max_body, config.server.read_timeout_s)
        # cross-community requests always answer to the deployment's [trust] mode (registry_mode and
        # repository_mode are for this community's own systems)
        query.security = trust_policy(config, registry.engine)
        retrieve.security = trust_policy(config, registry.engine)
        routes += [
            Route("/xca/query", SoapRoute(query, "xca-query.wsdl")),
            Route("/xca/retrieve", SoapRoute(retrieve, "xca-retrieve.wsdl")),
        ]
    if not config.communities:
        return routes, None
    tc = config.trust
    initiating = InitiatingGateway(
        config.communities,
        identity=Identity(tc.sign_cert, tc.sign_key) if tc.sign_key else None,
        anchors=config.trust_anchor_files(),
        spool_dir=Path(config.server.data_dir) / "gateway-spool",
    )
    query, retrieve = initiating.endpoints(
        max_body, config.server.read_timeout_s, config.server.max_document_mb * 2**20
    )
    for endpoint in (query, retrieve):
        endpoint.security = trust_policy(config, registry.engine)
    routes += [
        Route("/ig/registry", SoapRoute(query, "registry.wsdl")),
        Route("/ig/repository", SoapRoute(retrieve, "repository.wsdl")),
    ]
    return routes, initiating


def build_repositories(config: Config, registry: RegistryService) -> list[RepositoryService]:
    """One RepositoryService per ``[[repository]]``, registering in process or at a remote registry."""
    from xds.repository import registration
    from xds.repository.service import RepositoryService, persistent_unique_id

    out = []
    for rc in config.repositories:
        store = rc.store(config.server.data_dir)
        tc = config.trust
        signing = (Path(tc.sign_key).read_bytes(), Path(tc.sign_cert).read_bytes()) if tc.sign_key else None
        register, lookup = (
            registration.remote(rc.registry_url, timeout=rc.registry_timeout_s, signing=signing)
            if rc.registry_url
            else registration.local(registry)
        )
        out.append(
            RepositoryService(
                rc.name,
                rc.unique_id or persistent_unique_id(store),
                store,
                registry.engine,
                register,
                lookup,
                home_community_id=config.registry.home_community_id,
                access=registry.access,
                owner=rc.owner,
                registry_timeout=rc.registry_timeout_s,
            )
        )
    return out


class SoapRoute:
    """An ASGI app for one actor path: SOAP POSTs go to the endpoint, ``GET ?wsdl`` to its WSDL."""

    def __init__(self, endpoint: ASGIApp, wsdl_name: str) -> None:
        self.endpoint = endpoint
        self.wsdl_name = wsdl_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            await _wsdl(self.wsdl_name, Request(scope))(scope, receive, send)
            return
        await self.endpoint(scope, receive, send)


def _wsdl(name: str, request: Request) -> Response:
    """``GET ?wsdl``: the endpoint's WSDL; ``GET ?xsd=NAME``: a schema it imports (xds.schemas).
    Their addresses are ``[server] public_url`` + path when it is set (the wsa:To the trust model
    expects), else the address the request came to."""
    from xds import schemas

    public_url = getattr(request.app.state, "public_url", "")  # else the Host header's address
    endpoint = public_url + request.url.path if public_url else str(request.url.replace(query=""))
    if "xsd" in request.query_params:
        schema = schemas.served_schema(request.query_params["xsd"], endpoint)
        if schema is None:
            return PlainTextResponse("no such schema\n", status_code=404)
        return Response(schema, media_type="text/xml")
    if "wsdl" not in request.query_params and request.url.query.lower() != "wsdl":
        return PlainTextResponse("POST SOAP 1.2 messages here; GET ?wsdl for the service description\n")
    wsdl = schemas.served_wsdl(name, endpoint)
    if wsdl is None:
        return PlainTextResponse("no WSDL\n", status_code=404)
    return Response(wsdl, media_type="text/xml")


def app_from_environment() -> Starlette:
    """Factory for uvicorn workers: the configuration travels in an environment variable."""
    config = Config.from_dict(json.loads(os.environ[CONFIG_ENV]))
    configure_logging(config.server)
    return build_app(config, prepare=False)
