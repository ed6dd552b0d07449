"""The operator's endpoints of ``xds serve``: ``GET /health`` (the process answers), ``GET /ready``
(it can serve: database reachable with its schema current, data directories writable with free
space above ``[server] min_free_mb``) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

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

    async def ready(_: Request) -> Response:
        checks = await to_thread.run_sync(
            readiness, registry.engine, directories(config, repositories), config.server.min_free_mb
        )
        ok = all(c.ok for c in checks)
        text = ("ready\n" if ok else "not ready\n") + "".join(c.line() + "\n" for c in checks)
        return PlainTextResponse(text, status_code=200 if ok else 503)

    def sizes() -> dict[str, tuple[int, int]]:
        return {repo.name: repo.store_size() for repo in repositories}

    return [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_route(BlobStoreCollector(sizes)), methods=["GET"]),
    ]
