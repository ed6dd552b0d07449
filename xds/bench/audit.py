"""``xds bench audit``: ITI-42 registrations and ITI-18 FindDocuments per second with the audit trail
on (database + syslog over UDP to a collector in a process of its own) next to the same with it off.

Two servers run side by side on fresh SQLite databases, one with ``[audit] database = true`` and
``syslog = "udp://…"``, one with auditing off. How the comparison is kept fair:

- **Many short runs, alternated.** The machine's speed drifts by ±10 % over seconds (on a shared
  host, mostly from outside the VM) and a run's rate shows it, so one transaction is measured in
  ``--rounds`` pairs of short runs, off then on, each straight after the other server's run of the
  same transaction (neither runs straight after its own run, which could begin with its caches
  warm). Both servers see the same drift; the verdict is the ratio of the two totals (requests
  over seconds). A round's ratio still varies by ~5 %, and whole runs of the bench by more than
  the standard error printed (the machine's state over minutes): 80 rounds instead of 30 did not
  narrow the spread between runs.
- **The same data.** Both registries receive the same submissions (they are two registries, so the
  same documents), so that a query finds the same documents in each.
- **Many pairs of servers.** Two processes of the same program on the same data still differ by a
  few per cent for their whole lives (where their memory and code landed): one pair's ratio is
  off by as much, however many rounds it runs. So both servers are started afresh ``--starts``
  times on the data they hold, the rounds shared among the starts, and each start's first runs are
  not measured. Both servers of a start run with one ``PYTHONHASHSEED`` (drawn for it), so neither
  gets a luckier layout of its dictionaries. The ratio's standard error is taken from the starts'
  ratios (a start's rounds are not independent of each other), and their span is printed.
- **No run pays for another's delivery.** The audit events are delivered by a lower-priority process
  after the answers; after each run with auditing on the bench waits until every event of it reached
  every sink, and reports how long the delivery lagged behind the run's last answer and the CPU it
  used per event. Every run starts after ``--settle`` seconds of quiet, whichever server it is for.

Nothing here asserts a time; it reports.
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
from dataclasses import dataclass, field
from typing import Any

from xds.bench.harness import RunResult, Server, cpu_seconds, drive, http_request, running_server
from xds.bench.register import register_messages
from xds.metadata import vocabulary as v


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="registrations and queries per second, audit trail on vs. off")
    p.add_argument("--requests", type=int, default=1000, help="registrations per measured run")
    p.add_argument("--queries", type=int, default=2000, help="FindDocuments queries per measured run")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive connections")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (each server)")
    p.add_argument("--rounds", type=int, default=30, help="off/on pairs of runs per transaction, alternated")
    p.add_argument(
        "--starts",
        type=int,
        default=10,
        help="times both servers are started afresh (the rounds shared among them)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.2,
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


@dataclass
class Runs:
    """One transaction's alternated runs: each server's rates, and what the audited one's delivery
    took after each of its runs (seconds after the last answer, CPU seconds per event)."""

    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    delivery_cpu: list[float] = field(default_factory=list)
    by_start: dict[int, list[float]] = field(default_factory=dict)  # off seconds, requests; on the same

    def add(self, label: str, run: RunResult, start: int = 0) -> None:
        totals = self.by_start.setdefault(start, [0.0, 0.0, 0.0, 0.0])
        at = 0 if label == "off" else 2
        (self.off if label == "off" else self.on).append(run.rate)
        totals[at] += run.seconds
        totals[at + 1] += run.requests

    def rates(self) -> tuple[float, float]:
        """Requests per second with auditing on and with it off, over all runs (their totals)."""
        starts = list(self.by_start.values()) or [[0.0] * 4]
        off_s, off_n, on_s, on_n = (sum(column) for column in zip(*starts, strict=True))
        return (on_n / on_s if on_s else 0.0), (off_n / off_s if off_s else 0.0)

    def ratio(self) -> float:
        """Throughput with auditing on over throughput with it off, over all runs."""
        on, off = self.rates()
        return on / off if off else 0.0

    def paired(self) -> list[float]:
        return [on / off for on, off in zip(self.on, self.off, strict=True) if off]

    def per_start(self) -> list[float]:
        """Each start's ratio (of its runs' totals, as :meth:`ratio`)."""
        return [
            (on_n / on_s) / (off_n / off_s)
            for off_s, off_n, on_s, on_n in self.by_start.values()
            if off_s and on_s and off_n
        ]

    def standard_error(self) -> float:
        """The ratio's standard error: from the starts' ratios when there are several (a pair of
        processes keeps its few per cent of difference for its whole life, so its rounds are not
        independent of each other), else from the rounds'."""
        ratios = self.per_start()
        if len(ratios) < 2:
            ratios = self.paired()
        return statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0


def bench(args: argparse.Namespace) -> int:
    n, q, c, rounds = args.requests, args.queries, args.concurrency, max(1, args.rounds)
    starts = max(1, min(args.starts, rounds))
    print(
        f"xds bench audit: {rounds} rounds per transaction of audit off / on alternated, {n} registrations "
        f"or {q} queries per run, {c} connections, {args.workers} workers per server, both servers started "
        f"{starts} times; audit on = database + syslog UDP"
    )
    from xds import safexml

    messages = register_messages(n * (rounds + starts), seed=11)
    patients = sorted(
        {
            (el.get("value") or "")
            for m in messages[:2000]
            for el in safexml.parse(m).iter(f"{{{v.NS_RIM}}}ExternalIdentifier")
            if el.get("identificationScheme") == v.SS_PATIENT_ID
        }
    )
    queries = _find_documents(patients, q)
    reg_type = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_REGISTER}"'
    query_type = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    ok = v.RESPONSE_SUCCESS.encode()
    from xds.audit.syslog import SyslogSink

    results = {"register": Runs(), "query": Runs()}
    batches = iter(range(rounds + starts))  # the registrations, n at a time: each batch goes to both servers
    failures = audited = 0
    with (
        udp_collector() as (port, received),
        tempfile.TemporaryDirectory(prefix="xds-bench-audit-spool-") as spool,
        tempfile.TemporaryDirectory(prefix="xds-bench-audit-off-") as off_data,
        tempfile.TemporaryDirectory(prefix="xds-bench-audit-on-") as on_data,
    ):
        sinks = ["database", SyslogSink(f"udp://127.0.0.1:{port}").name]
        audit_off = {"XDS_AUDIT_DATABASE": "0", "XDS_AUDIT_SYSLOG": ""}
        audit_on = {
            "XDS_AUDIT_DATABASE": "1",
            "XDS_AUDIT_SYSLOG": f"udp://127.0.0.1:{port}",
            "XDS_AUDIT_SPOOL_DIR": spool,
        }
        for start in range(starts):  # both servers afresh, on the data they hold
            same = {"PYTHONHASHSEED": str(random.SystemRandom().randrange(1, 2**32))}
            with (
                running_server(workers=args.workers, env={**same, **audit_off}, data_dir=off_data) as off,
                running_server(workers=args.workers, env={**same, **audit_on}, data_dir=on_data) as on,
            ):
                servers = (("off", off), ("on", on))
                batch = _batch(messages, next(batches), n)
                for _, server in servers:  # warm-up, not measured
                    drive(server.host, server.port, _requests(server, batch, reg_type), c, ok)
                    drive(server.host, server.port, _requests(server, queries, query_type), c, ok)
                audited += len(batch) + len(queries)
                _caught_up(spool, sinks)
                share = rounds // starts + (start < rounds % starts)
                for kind, runs in results.items():
                    for _ in range(share):
                        bodies, content_type = (
                            (_batch(messages, next(batches), n), reg_type)
                            if kind == "register"
                            else (queries, query_type)
                        )
                        for label, server in servers:
                            sent = _requests(server, bodies, content_type)
                            time.sleep(args.settle)
                            run = drive(server.host, server.port, sent, c, ok)
                            failures += run.failures
                            runs.add(label, run, start)
                            if label == "on":
                                audited += len(sent)
                                before = cpu_seconds(on.pid)
                                runs.lags.append(_caught_up(spool, sinks))
                                after = cpu_seconds(on.pid)
                                if before is not None and after is not None:
                                    runs.delivery_cpu.append((after - before) / len(sent))
        stored = _stored(on_data)
    for kind, runs in results.items():
        print(_verdict(kind, runs))
    print(f"audit events in the database: {stored:,} of {audited:,}")
    print(f"syslog datagrams received: {received.value:,} (UDP: a collector that falls behind drops some)")
    if failures:
        print(f"failures: {failures}")
        return 1
    return 0


def _batch(messages: list[bytes], number: int, size: int) -> list[bytes]:
    return messages[number * size : (number + 1) * size]


def _requests(server: Server, bodies: list[bytes], content_type: str) -> list[bytes]:
    return [http_request(server.host, server.port, "/registry", body, content_type) for body in bodies]


def _verdict(kind: str, runs: Runs) -> str:
    """One line: throughput on and off over all runs, their ratio against the target with its standard
    error, the median of the rounds' ratios, the span of each server's runs, and the delivery after."""
    ratio = runs.ratio()
    on, off = runs.rates()
    verdict = "meets" if ratio >= 0.95 else "BELOW"
    spans = ", ".join(
        f"{label} {min(rates):,.0f}-{max(rates):,.0f}"
        for label, rates in (("off", runs.off), ("on", runs.on))
    )
    starts = runs.per_start()
    if len(starts) > 1:
        spans += f"; starts {min(starts):.1%}-{max(starts):.1%}"
    cpu = (
        f", {statistics.median(runs.delivery_cpu) * 1e6:,.0f} µs of CPU per event"
        if runs.delivery_cpu
        else ""
    )
    return (
        f"{kind}: audit on {on:,.0f}/s, off {off:,.0f}/s, ratio {ratio:.1%} ± {runs.standard_error():.1%} "
        f"(target >= 95%: {verdict}; median of each round's on/off {statistics.median(runs.paired()):.1%})  "
        f"(rounds: {spans}); every event delivered {statistics.median(runs.lags):.2f} s (median) after the "
        f"run's last answer{cpu}"
    )
