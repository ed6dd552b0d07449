"""The operator's endpoints of ``xds serve``: ``GET /health`` (the process answers), ``GET /ready``
(it can serve: database reachable with its schema current, data directories writable with free
space above ``[server] min_free_mb``) and ``GET /metrics`` (Prometheus).

What they tell (paths, the database's host, request counts, store sizes) is for the operator's
networks, ``[server] operations_clients``: a client outside them gets /ready's status line alone
(enough for a load balancer) and 403 from /metrics. The client is the connection's peer or, for a
request relayed by a proxy uvicorn trusts (by default one on this host, ``FORWARDED_ALLOW_IPS``),
the address its ``X-Forwarded-For`` names."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from xds.operations.health import readiness
from xds.operations.metrics import BlobStoreCollector, metrics_route

if TYPE_CHECKING:
    from xds.config import Config
    from xds.registry.service import RegistryService
    from xds.repository.service import RepositoryService


def directories(config: Config, repositories: list[RepositoryService]) -> dict[str, str]:
    """The data directory and each repository's store, by the name a check gives them."""
    out = {"data_dir": config.server.data_dir}
    for repo in repositories:
        out[f"repository {repo.name}"] = str(repo.store.root)
    return out


def operations_routes(
    config: Config, registry: RegistryService, repositories: list[RepositoryService]
) -> list[Route]:
    from anyio import to_thread

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    operator = OperatorNetworks(config.server.operations_clients)

    async def ready(request: Request) -> Response:
        checks = await to_thread.run_sync(
            readiness, registry.engine, directories(config, repositories), config.server.min_free_mb
        )
        ok = all(c.ok for c in checks)
        text = "ready\n" if ok else "not ready\n"
        if operator.admits(request):
            text += "".join(c.line() + "\n" for c in checks)
        return PlainTextResponse(text, status_code=200 if ok else 503)

    def sizes() -> dict[str, tuple[int, int]]:
        return {repo.name: repo.store_size() for repo in repositories}

    scrape = metrics_route(BlobStoreCollector(sizes))

    async def metrics(request: Request) -> Response:
        if not operator.admits(request):
            return PlainTextResponse("metrics are for the operator's networks\n", status_code=403)
        return await scrape(request)  # type: ignore[misc]

    return [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


class OperatorNetworks:
    """The networks of ``[server] operations_clients`` (CIDR list, or ``*`` for any client)."""

    def __init__(self, spec: str) -> None:
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        self.anyone = "*" in parts
        self.networks = [ipaddress.ip_network(p, strict=False) for p in parts if p != "*"]

    def admits(self, request: Request) -> bool:
        if self.anyone:
            return True
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
