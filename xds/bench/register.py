"""``xds bench register``: ITI-42 registrations per second next to a parse+serialise floor.

``xds bench register`` starts ``xds serve`` (SQLite, then PostgreSQL when a URL is given), sends
one-document ITI-42 submissions over HTTP from concurrent keep-alive connections, and prints
registrations per second next to the floor: the same server answering the same kind of message
after only parsing and serialising it (``/_bench/floor``). Nothing here asserts a time; it reports.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from xds.bench.harness import alternate, drive, http_request, running_server
from xds.metadata import ebrim
from xds.metadata import vocabulary as v


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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

    from xds.database import open_engine_nopool
    from xds.database.audit_store import metadata as audit_metadata
    from xds.database.replay import seen_ids
    from xds.registry.schema import metadata
    from xds.repository.schema import metadata as repository_metadata

    engine = open_engine_nopool(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        repository_metadata.drop_all(conn)
        audit_metadata.drop_all(conn)
        seen_ids.drop(conn, checkfirst=True)
        conn.execute(text("DROP FUNCTION IF EXISTS xds_audit_append_only() CASCADE"))  # audit tables' guard
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
