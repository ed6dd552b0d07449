"""Prometheus metrics at ``GET /metrics``, with the standard client library (prometheus_client).

- ``xds_requests_total{transaction, outcome}``: SOAP requests by transaction (ITI-41, ITI-18 …)
  and outcome (success, partial, failure — a RegistryResponse status — or fault);
- ``xds_request_duration_seconds{transaction}``: their latency, a histogram;
- ``xds_database_errors_total{kind}``: database or disk failures answered with an XDS error
  (full, busy, unavailable, error);
- ``xds_blob_store_bytes{repository}`` / ``xds_blob_store_blobs``: what each repository's blob
  store holds, read from its rows when scraped (at most every 15 s).

With several workers each process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(``xds serve`` sets it to ``<data_dir>/metrics`` and empties it at start), and a scrape, whichever
worker answers it, sums them (prometheus_client's multiprocess mode). On the request path a
request costs two clock reads, a search of the answer's first bytes for its status and a few
additions to this process's tallies, which are written to the metrics once a second.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xds.database import faults
from xds.metadata import vocabulary as v
from xds.operations import ENV

# chosen when prometheus_client picked its value class (at its import): the environment then
MULTIPROCESS = bool(os.environ.get(ENV))

REQUESTS = Counter("xds_requests", "SOAP requests by transaction and outcome", ["transaction", "outcome"])
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION = Histogram(
    "xds_request_duration_seconds", "SOAP request latency by transaction", ["transaction"], buckets=_BUCKETS
)
DATABASE_ERRORS = Counter(
    "xds_database_errors", "database or disk failures answered with an XDS error", ["kind"]
)

_TRANSACTIONS = {
    v.ACTION_REGISTER: "ITI-42",
    v.ACTION_STORED_QUERY: "ITI-18",
    v.ACTION_MULTI_PATIENT_QUERY: "ITI-51",
    v.ACTION_PROVIDE_AND_REGISTER: "ITI-41",
    v.ACTION_RETRIEVE: "ITI-43",
    v.ACTION_REMOVE_DOCUMENTS: "ITI-86",
    v.ACTION_UPDATE_DOCUMENT_SET: "ITI-57",
    v.ACTION_DELETE_DOCUMENT_SET: "ITI-62",
    v.ACTION_RESTRICTED_UPDATE: "ITI-92",
    v.ACTION_XCA_QUERY: "ITI-38",
    v.ACTION_XCA_RETRIEVE: "ITI-39",
}
_TRANSACTIONS |= {action + "Response": name for action, name in _TRANSACTIONS.items()}
_OUTCOMES = ((b"ResponseStatusType:PartialSuccess", "partial"), (b"ResponseStatusType:Success", "success"))
_STATUS_WINDOW = 16384  # the RegistryResponse status sits in the answer's first bytes


def _count_database_error(kind: str) -> None:
    DATABASE_ERRORS.labels(kind).inc()


faults.observers.append(_count_database_error)


def _action(content_type: bytes) -> str:
    at = content_type.find(b'action="')
    if at < 0:
        return ""
    end = content_type.find(b'"', at + 8)
    return content_type[at + 8 : end].decode("latin-1") if end > 0 else ""


class MetricsMiddleware:
    """Counts and times every SOAP POST as it is answered (the ASGI app around the routes).

    A request only adds to this process's tallies (plain integers, ~1 us); they are written to
    the metrics once a second and before this process answers a scrape — a memory-mapped sample
    costs ~5 us with its lock, and a request would otherwise pay for three."""

    FLUSH_EVERY = 1.0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._counts: dict[tuple[str, str], int] = {}
        self._durations: dict[str, tuple[list[float], list[int]]] = {}  # ([sum], bucket counts)
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            if scope["type"] == "http" and scope["path"] == "/metrics":
                self.flush()
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"transaction": "", "outcome": ""}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                transaction = _TRANSACTIONS.get(_action(headers.get(b"content-type", b"")), "")
                if message["status"] != 200 or not transaction:
                    seen["outcome"] = "fault"
                    transaction = transaction or _request_transaction(scope)
                seen["transaction"] = transaction
            elif not seen["outcome"]:
                head = message.get("body", b"")[:_STATUS_WINDOW]
                seen["outcome"] = next((name for marker, name in _OUTCOMES if marker in head), "failure")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._tally(
                seen["transaction"] or _request_transaction(scope), seen["outcome"] or "fault", started
            )

    def _tally(self, transaction: str, outcome: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        key = (transaction, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1
        tally = self._durations.get(transaction)
        if tally is None:
            tally = self._durations[transaction] = ([0.0], [0] * (len(_BUCKETS) + 1))
        tally[0][0] += elapsed
        tally[1][bisect.bisect_left(_BUCKETS, elapsed)] += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.FLUSH_EVERY)
        self.flush()

    def flush(self) -> None:
        """Write the tallies into the metrics (this process's samples)."""
        counts, self._counts = self._counts, {}
        durations, self._durations = self._durations, {}
        for (transaction, outcome), n in counts.items():
            REQUESTS.labels(transaction, outcome).inc(n)
        for transaction, (total, buckets) in durations.items():
            child = DURATION.labels(transaction)
            child._sum.inc(total[0])  # type: ignore[attr-defined]  # (no public API adds n samples)
            for i, n in enumerate(buckets):
                if n:
                    child._buckets[i].inc(n)  # type: ignore[attr-defined]


def _request_transaction(scope: Scope) -> str:
    """The transaction a refused request asked for (only known actions: labels stay few)."""
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            return _TRANSACTIONS.get(_action(value), "unknown")
    return "unknown"


class BlobStoreCollector(Collector):
    """The bytes and blobs each repository holds, from its stored rows: read afresh at each
    scrape while that takes under 50 ms, else kept for 15 s (a large store's rows take a while)."""

    CHEAP = 0.05
    TTL = 15.0

    def __init__(self, sizes: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.sizes = sizes
        self._cache: tuple[float, dict[str, tuple[int, int]]] = (0.0, {})

    def collect(self):  # type: ignore[no-untyped-def]
        until, sizes = self._cache
        if time.monotonic() >= until:
            started = time.monotonic()
            try:
                sizes = self.sizes()
            except Exception:  # the database is down: nothing to say about the store
                sizes = {}
            took = time.monotonic() - started
            self._cache = (started + (self.TTL if took > self.CHEAP else 0.0), sizes)
        size = GaugeMetricFamily(
            "xds_blob_store_bytes", "bytes in the repository's blob store", labels=["repository"]
        )
        count = GaugeMetricFamily(
            "xds_blob_store_blobs", "blobs in the repository's blob store", labels=["repository"]
        )
        for name, (blobs, total) in sorted(sizes.items()):
            size.add_metric([name], total)
            count.add_metric([name], blobs)
        yield size
        yield count


def metrics_route(blob_store: BlobStoreCollector) -> Callable[[Request], Response]:
    """``GET /metrics``: the samples of every worker (summed) and the blob stores' sizes."""
    from anyio import to_thread

    def scrape() -> bytes:
        if MULTIPROCESS:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            for collector in (REQUESTS, DURATION, DATABASE_ERRORS):
                registry.register(collector)
        registry.register(blob_store)
        return generate_latest(registry)

    async def metrics(_: Request) -> Response:
        return Response(await to_thread.run_sync(scrape), media_type=CONTENT_TYPE_LATEST)

    return metrics  # type: ignore[return-value]
