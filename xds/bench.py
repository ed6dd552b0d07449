"""``xds bench``: throughput measured against a floor taken in the same run on the same server.

``xds bench register`` starts ``xds serve`` (SQLite, then PostgreSQL when a URL is given), sends
one-document ITI-42 submissions over HTTP from concurrent keep-alive connections, and prints
registrations per second next to the floor: the same server answering the same kind of message
after only parsing and serialising it (``/_bench/floor``). Nothing here asserts a time; it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xds.metadata import ebrim
from xds.metadata import vocabulary as v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    reg = sub.add_parser("register", help="ITI-42 registrations per second vs. parse+serialise floor")
    reg.add_argument("--requests", type=int, default=6000, help="submissions per measured run")
    reg.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive connections")
    reg.add_argument("--workers", type=int, default=2, help="server worker processes")
    reg.add_argument(
        "--rounds", type=int, default=3, help="floor and registry runs, alternated; medians are reported"
    )
    reg.add_argument(
        "--postgres-url",
        default=os.environ.get("XDS_BENCH_POSTGRES_URL", ""),
        help="also run on this PostgreSQL database (env XDS_BENCH_POSTGRES_URL)",
    )
    reg.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL even if a URL is known")
    from xds import bench_query, bench_repository, bench_trust

    bench_repository.add_arguments(sub)
    bench_query.add_arguments(sub)
    bench_trust.add_arguments(sub)


def main(args: argparse.Namespace) -> int:
    if args.bench == "register":
        return bench_register(args)
    if args.bench in ("load", "query"):
        from xds import bench_query

        return bench_query.bench_load(args) if args.bench == "load" else bench_query.bench_query(args)
    if args.bench == "trust":
        from xds import bench_trust

        return bench_trust.bench(args)
    if args.bench in ("provide", "retrieve"):
        from xds import bench_repository

        return bench_repository.bench(args)
    raise ValueError(f"unknown benchmark {args.bench}")


# -------------------------------------------------------------------------------------------------
# the server under test
# -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(*, workers: int, database_url: str = "") -> Iterator[tuple[str, int]]:
    """``xds serve`` in a child process with the benchmark floor route enabled."""
    data_dir = tempfile.mkdtemp(prefix="xds-bench-")
    port = free_port()
    cmd = [sys.executable, "-m", "xds.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", data_dir, "--workers", str(workers)]
    if database_url:
        cmd += ["--database-url", database_url]
    env = dict(os.environ, XDS_SERVER_BENCH_FLOOR="1", XDS_SERVER_LOG_LEVEL="warning")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"xds serve exited: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("xds serve did not start within 60 s")
            time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


# -------------------------------------------------------------------------------------------------
# a small keep-alive HTTP/1.1 load generator (cheap enough not to be the bottleneck)
# -------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    requests: int
    seconds: float
    failures: int
    first_failure: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Rounds:
    """Floor runs and server runs, alternated so that a burst of noise on the machine hits both."""

    floors: list[RunResult]
    ours: list[RunResult]

    def median(self) -> tuple[float, float]:
        """(ours, floor): the median rate of each."""
        return statistics.median(r.rate for r in self.ours), statistics.median(r.rate for r in self.floors)

    def best(self) -> tuple[float, float]:
        """(ours, floor): the best rate of each."""
        return max(r.rate for r in self.ours), max(r.rate for r in self.floors)

    def spread(self, label: str, unit: str = "") -> str:
        def span(runs: list[RunResult]) -> str:
            return f"{min(r.rate for r in runs):,.0f}-{max(r.rate for r in runs):,.0f}"

        return f"  (rounds: {label} {span(self.ours)}, floor {span(self.floors)}{unit})"

    @property
    def failures(self) -> tuple[int, int]:
        """(ours, floor): failed requests over every round."""
        return sum(r.failures for r in self.ours), sum(r.failures for r in self.floors)

    @property
    def first_failure(self) -> str:
        return next((r.first_failure for r in [*self.ours, *self.floors] if r.first_failure), "")


def alternate(
    host: str,
    port: int,
    floor_requests: Callable[[int], Sequence[bytes]],
    our_requests: Callable[[int], Sequence[bytes]],
    *,
    rounds: int,
    concurrency: int,
    floor_ok: bytes,
    our_ok: bytes,
) -> Rounds:
    """``rounds`` pairs of runs, the floor's first: ``floor_requests(r)`` then ``our_requests(r)``."""
    result = Rounds([], [])
    for r in range(rounds):
        result.floors.append(drive(host, port, floor_requests(r), concurrency, floor_ok))
        result.ours.append(drive(host, port, our_requests(r), concurrency, our_ok))
    return result


def http_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): val.strip() for k, _, val in (h.partition(":") for h in lines[1:] if h)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = bytearray()
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _drive(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, ok_marker: bytes
) -> RunResult:
    queue = iter(requests)
    failures = 0
    first_failure = ""

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal failures, first_failure
        try:
            for req in queue:
                writer.write(req)
                status, body = await _read_response(reader)
                if status != 200 or ok_marker not in body:
                    failures += 1
                    if not first_failure:
                        first_failure = f"HTTP {status}: {body[:600].decode(errors='replace')}"
        finally:
            writer.close()

    # Connections are opened one by one, a moment apart, so that each server worker process gets
    # its share (a worker woken by a burst of connections would otherwise accept all of them).
    connections = []
    for _ in range(concurrency):
        connections.append(await asyncio.open_connection(host, port))
        await asyncio.sleep(0.005)
    start = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in connections))
    return RunResult(len(requests), time.perf_counter() - start, failures, first_failure)


def drive(host: str, port: int, requests: Sequence[bytes], concurrency: int, ok_marker: bytes) -> RunResult:
    return asyncio.run(_drive(host, port, requests, concurrency, ok_marker))


# -------------------------------------------------------------------------------------------------
# xds bench register
# -------------------------------------------------------------------------------------------------
def register_messages(count: int, *, seed: int = 42) -> list[bytes]:
    """``count`` distinct one-document ITI-42 SOAP envelopes (Norwegian-profile patients)."""
    from xds import samples
    from xds.soap.envelope import build_request

    rng = random.Random(seed)
    patients = [samples.patient_cx(samples.person_number(rng)) for _ in range(max(1, count // 20))]
    out = []
    for _ in range(count):
        sample = samples.submission(rng.choice(patients), rng=rng)
        body = ebrim.submit_objects_request_bytes(sample.submission)
        envelope, _ = build_request(v.ACTION_REGISTER, body, to="http://127.0.0.1/registry")
        out.append(envelope)
    return out


def bench_register(args: argparse.Namespace) -> int:
    n, c, rounds = args.requests, args.concurrency, max(1, args.rounds)
    print(
        f"xds bench register: {n} one-document submissions, {c} connections, {args.workers} workers, "
        f"{rounds} rounds (floor and registry alternated; medians)"
    )
    t0 = time.perf_counter()
    warm = n // 10
    messages = register_messages(n * rounds + warm)
    size = sum(len(m) for m in messages) // len(messages)
    print(f"  prepared {len(messages)} messages of ~{size / 1024:.1f} KB in {time.perf_counter() - t0:.1f} s")
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_REGISTER}"'
    targets = [("sqlite", "")]
    if args.postgres_url and not args.sqlite_only:
        targets.append(("postgresql", args.postgres_url))
    worst = 0
    for label, url in targets:
        if url:
            _reset_postgres(url)
        with running_server(workers=args.workers, database_url=url) as (host, port):
            floor_reqs = [http_request(host, port, "/_bench/floor", m, ctype) for m in messages[:n]]
            reg_reqs = [http_request(host, port, "/registry", m, ctype) for m in messages]
            drive(host, port, floor_reqs[:warm], c, b"SubmitObjectsRequest")
            drive(host, port, reg_reqs[n * rounds :], c, v.RESPONSE_SUCCESS.encode())
            runs = alternate(
                host,
                port,
                lambda r, reqs=floor_reqs: reqs,
                lambda r, reqs=reg_reqs: reqs[r * n : (r + 1) * n],  # each round registers its own
                rounds=rounds,
                concurrency=c,
                floor_ok=b"SubmitObjectsRequest",
                our_ok=v.RESPONSE_SUCCESS.encode(),
            )
        our_rate, floor_rate = runs.median()
        ratio = our_rate / floor_rate if floor_rate else 0.0
        target = 0.50 if label == "sqlite" else 0.35
        verdict = "meets" if ratio >= target else "BELOW"
        spread = runs.spread("registry") if rounds > 1 else ""
        print(
            f"register {label}: {our_rate:,.0f} registrations/s  floor {floor_rate:,.0f} req/s  "
            f"ratio {ratio:.1%}  (target >= {target:.0%}: {verdict}){spread}"
        )
        failures = sum(runs.failures)
        if failures:
            print(f"  failures: {failures}; first: {runs.first_failure}")
            worst = 1
    return worst


def _reset_postgres(url: str) -> None:
    """Empty the benchmark database so every run starts alike."""
    from sqlalchemy import text

    from registry.database import open_engine_nopool
    from registry.schema import metadata
    from repository.schema import metadata as repository_metadata
    from xds.trust.enforcement import seen_ids

    engine = open_engine_nopool(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        repository_metadata.drop_all(conn)
        seen_ids.drop(conn, checkfirst=True)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def floor_route() -> object:
    """The floor endpoint: parse the SOAP message with the project's parser and serialise it back."""
    from lxml import etree
    from starlette.requests import Request
    from starlette.responses import Response

    from xds import safexml

    async def floor(request: Request) -> Response:
        body = await request.body()
        root = safexml.parse(body)
        return Response(etree.tostring(root), media_type="application/soap+xml")

    return floor


__all__ = ["add_arguments", "main", "running_server", "drive", "register_messages", "floor_route", "Path"]
