"""``xds bench audit``: ITI-42 registrations and ITI-18 FindDocuments per second with the audit trail
on (database + syslog over UDP to a collector in this process) next to the same with it off.

Two servers run side by side on fresh SQLite databases, one with ``[audit] database = true`` and
``syslog = "udp://…"``, one with auditing off; their runs alternate, off first in one round and on
first in the next (off, on, on, off, …), so a burst of load or a drift on the machine hits both,
and the medians are compared. The target is within 5 %. The audit events are delivered by a
lower-priority process after the answers; after each run with auditing on the next run waits until
every event of it reached every sink (so no run pays for another's), and that wait is reported: how
long the delivery lagged behind the last answer. Every run then starts after ``--settle`` seconds
of quiet, whichever server it is for: the collector's last datagrams and the disk's write-back of
the delivery would otherwise fall into the run after an audited one. Nothing here asserts a time;
it reports.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from xds.bench.harness import drive, http_request, running_server
from xds.bench.register import register_messages
from xds.metadata import vocabulary as v


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="registrations and queries per second, audit trail on vs. off")
    p.add_argument("--requests", type=int, default=5000, help="requests per measured run")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive connections")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (each server)")
    p.add_argument(
        "--rounds", type=int, default=5, help="off/on pairs, alternated (off first, then on first); medians"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds of quiet before each run (the last run's delivery, datagrams and write-back done)",
    )


def _receive(sock: socket.socket, count: Any, stop: Any) -> None:
    while not stop.is_set():
        try:
            sock.recv(65536)
            with count.get_lock():
                count.value += 1
        except TimeoutError:
            continue


@contextlib.contextmanager
def udp_collector() -> Iterator[tuple[int, Any]]:
    """A syslog collector on 127.0.0.1 that counts the datagrams it receives: (port, count), in a
    process of its own (as a collector is), so that it takes no time from the load generator."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    context = multiprocessing.get_context("fork")
    count, stop = context.Value("q", 0), context.Event()
    process = context.Process(target=_receive, args=(sock, count, stop), daemon=True)
    process.start()
    try:
        yield sock.getsockname()[1], count
    finally:
        stop.set()
        process.join(timeout=2)
        sock.close()


def _caught_up(spool: str, sinks: list[str], timeout: float = 300.0) -> float:
    """Wait until every sink has every spooled event; the seconds it took."""
    from xds.audit.journal import pending

    start = time.monotonic()
    while pending(spool, sinks) and time.monotonic() - start < timeout:
        time.sleep(0.02)
    return time.monotonic() - start


def _stored(data_dir: str) -> int:
    """How many audit events the audited server's database holds (its ``audit.db``)."""
    from sqlalchemy import func, select

    from xds.database import open_engine, sqlite_url
    from xds.database.audit_store import audit_events, audit_url

    engine = open_engine(audit_url(sqlite_url(data_dir)))  # (where xds serve puts it in data_dir)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())
    finally:
        engine.dispose()


def _find_documents(patients: list[str], count: int) -> list[bytes]:
    from xds.bench.query import _slot, query_message

    rng = random.Random(7)
    return [
        query_message(
            v.SQ_FIND_DOCUMENTS,
            "LeafClass",
            _slot("$XDSDocumentEntryPatientId", f"'{rng.choice(patients)}'")
            + _slot("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
        )
        for _ in range(count)
    ]


def bench(args: argparse.Namespace) -> int:
    n, c, rounds = args.requests, args.concurrency, max(1, args.rounds)
    print(
        f"xds bench audit: {n} requests per run, {c} connections, {args.workers} workers per server, "
        f"{rounds} rounds of audit off / on alternated (medians); audit on = database + syslog UDP"
    )
    from xds import safexml

    messages = register_messages(2 * n * (rounds + 1), seed=11)
    patients = sorted(
        {
            (el.get("value") or "")
            for m in messages[:2000]
            for el in safexml.parse(m).iter(f"{{{v.NS_RIM}}}ExternalIdentifier")
            if el.get("identificationScheme") == v.SS_PATIENT_ID
        }
    )
    queries = _find_documents(patients, n)
    reg_type = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_REGISTER}"'
    query_type = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    ok = v.RESPONSE_SUCCESS.encode()
    from xds.audit.syslog import SyslogSink

    with (
        udp_collector() as (port, received),
        tempfile.TemporaryDirectory(prefix="xds-bench-audit-spool-") as spool,
        tempfile.TemporaryDirectory(prefix="xds-bench-audit-data-") as data_dir,
        running_server(workers=args.workers, env={"XDS_AUDIT_DATABASE": "0", "XDS_AUDIT_SYSLOG": ""}) as off,
        running_server(
            workers=args.workers,
            env={
                "XDS_AUDIT_DATABASE": "1",
                "XDS_AUDIT_SYSLOG": f"udp://127.0.0.1:{port}",
                "XDS_AUDIT_SPOOL_DIR": spool,
            },
            data_dir=data_dir,
        ) as on,
    ):
        sinks = ["database", SyslogSink(f"udp://127.0.0.1:{port}").name]
        servers = {"off": off, "on": on}
        rates: dict[tuple[str, str], list[float]] = {}
        lags: dict[str, list[float]] = {}
        failures = 0
        audited = n  # the warm-up registrations of the audited server, then each audited run's
        for i, (host, port_) in enumerate(servers.values()):
            warm = messages[i * n : (i + 1) * n]  # each server: the same patients, its own documents
            drive(host, port_, [http_request(host, port_, "/registry", m, reg_type) for m in warm], c, ok)
        _caught_up(spool, sinks)
        for r in range(rounds):
            order = list(enumerate(servers.items()))
            for i, (label, (host, port_)) in order if r % 2 == 0 else order[::-1]:
                start = (2 + 2 * r + i) * n
                regs = [
                    http_request(host, port_, "/registry", m, reg_type) for m in messages[start : start + n]
                ]
                qs = [http_request(host, port_, "/registry", m, query_type) for m in queries]
                for kind, requests in (("register", regs), ("query", qs)):
                    time.sleep(args.settle)
                    run = drive(host, port_, requests, c, ok)
                    failures += run.failures
                    rates.setdefault((kind, label), []).append(run.rate)
                    if label == "on":
                        lags.setdefault(kind, []).append(_caught_up(spool, sinks))
                        audited += len(requests)
        stored = _stored(data_dir)
    for kind in ("register", "query"):
        print(_verdict(kind, rates, lags[kind]))
    print(f"audit events in the database: {stored:,} of {audited:,}")
    print(f"syslog datagrams received: {received.value:,} (UDP: a collector that falls behind drops some)")
    if failures:
        print(f"failures: {failures}")
        return 1
    return 0


def _verdict(kind: str, rates: dict[tuple[str, str], list[float]], lags: list[float]) -> str:
    """One line: the medians on and off, their ratio against the target, the per-round ratio."""
    off_rate = statistics.median(rates[(kind, "off")])
    on_rate = statistics.median(rates[(kind, "on")])
    ratio = on_rate / off_rate if off_rate else 0.0
    verdict = "meets" if ratio >= 0.95 else "BELOW"
    spans = ", ".join(
        f"{label} {min(rates[(kind, label)]):,.0f}-{max(rates[(kind, label)]):,.0f}"
        for label in ("off", "on")
    )
    paired = statistics.median(
        on / off for on, off in zip(rates[(kind, "on")], rates[(kind, "off")], strict=True) if off
    )
    return (
        f"{kind}: audit on {on_rate:,.0f}/s, off {off_rate:,.0f}/s, ratio {ratio:.1%} "
        f"(target >= 95%: {verdict}; median of each round's on/off {paired:.1%})  (rounds: {spans}); "
        f"every event delivered {statistics.median(lags):.2f} s (median) after the run's last answer"
    )
