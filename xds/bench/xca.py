"""``xds bench xca``: the initiating gateway's fan-out and a large retrieve through both gateways.

1. Fan-out (ITI TF-2b §3.38): ten communities, each a responding gateway (``xds serve`` with its
   own registry) behind a proxy that holds every answer back 50 ms. A FindDocuments through the
   initiating gateway to all ten must take at most 1.2 × the slowest community asked alone through
   the same gateway — the ten are asked in parallel, not one after another. Single and fan-out
   queries alternate round by round; medians count.
2. Retrieve (ITI TF-2b §3.39): one 10 MB document read through the initiating gateway (ITI-43 →
   ITI-39 → the community's repository and back; unsigned, so the initiating gateway relays it as it
   arrives) must reach at least 50 % of the throughput of the same ITI-43 sent straight to the
   repository, alternating round by round (``--rounds``), medians. Three Python processes share the
   machine's cores on the way through against two on the direct path, so on a busy machine the
   figure follows their CPU.

Every deployment runs ``[trust] mode = "optional"`` with its own institution key: the lines above are
unsigned requests (the gateways' own work); a third fan-out line sends the same query signed, with an
XUA assertion, so that every ITI-38 is signed by the initiating gateway and verified by the
community, and every answer signed and verified on its way back (``xds bench trust`` measures one
verification alone). Every server is a child process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from xds import consumer, samples
from xds.bench.harness import free_port
from xds.metadata import vocabulary as v

ROOT = "2.16.578.1.12.4.1.7.9.50"  # bench communities (not assigned identifiers)
ISSUER = "https://idp.bench.invalid"
AUDIENCE = "urn:xds:bench"


class Trust:
    """The bench federation's keys: a CA, an identity provider, one institution per deployment."""

    def __init__(self, work: Path, names: list[str]) -> None:
        from xds.trust.keys import init_keys

        self.keys = init_keys(work / "keys", names)

    def section(self, name: str) -> tuple[dict[str, object], list[dict[str, object]]]:
        """``[trust]`` and ``[[trust.issuer]]`` of deployment ``name``."""
        me = self.keys.institutions[name]
        trust = {
            "mode": "optional",
            "ca_file": str(self.keys.ca.cert_path),
            "audience": AUDIENCE,
            "sign_cert": str(me.cert_path),
            "sign_key": str(me.key_path),
        }
        return trust, [{"name": ISSUER, "cert": str(self.keys.idp.cert_path)}]

    def consumer(self, patient: str) -> Callable[[bytes], bytes]:
        """A municipal doctor's system signing each request, with one assertion for them all."""
        from xds.trust.assertion import TrustAttributes, build_assertion, sign_assertion
        from xds.trust.wssecurity import MessageSigner

        doctor = TrustAttributes(
            subject_id="Ingrid Hansen",
            hpr_number="9144900",
            role="LE",
            organisation="Trondheim kommune",
            organisation_id="942110464",
            purpose_of_use="TREAT",
            healthcare_service="Hjemmesykepleie",
            resource_id=patient,
        )
        idp, me = self.keys.idp, self.keys.institutions["consumer"]
        token = build_assertion(doctor, issuer=ISSUER, audience=AUDIENCE)
        token = sign_assertion(token, idp.key_path.read_bytes(), idp.cert_path.read_bytes())
        signer = MessageSigner(me.key_path.read_bytes(), me.cert_path.read_bytes(), assertion=token)
        return signer.secure


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "xca",
        help="XCA: fan-out to 10 delayed responding gateways vs the slowest alone; a 10 MB retrieve "
        "through both gateways vs direct ITI-43",
    )
    p.add_argument("--communities", type=int, default=10, help="responding gateways (default 10)")
    p.add_argument("--delay-ms", type=int, default=50, help="added to every answer of each (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="rounds of single and fan-out queries, and of retrieves (default 15)",
    )
    p.add_argument("--doc-mb", type=int, default=10, help="size of the retrieved document (default 10)")


def _toml(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower()


def write_config(
    path: Path, sections: dict[str, dict[str, object]], arrays: dict[str, list[dict[str, object]]]
) -> None:
    """A TOML configuration file for ``xds serve --config`` (strings, numbers and booleans only)."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(x)}" for k, x in values.items()]
    for name, items in arrays.items():
        for values in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {_toml(x)}" for k, x in values.items()]
    path.write_text("\n".join(lines) + "\n")


class Child:
    """``xds serve --config`` in a child process (started at once; :meth:`ready` waits for /health)."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        cmd = [sys.executable, "-m", "xds.cli", "serve", "--config", str(config)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"xds serve exited: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("xds serve did not start within 120 s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def serve_all(stack: contextlib.ExitStack, configs: list[tuple[Path, int]]) -> None:
    """Start every configuration's server at once, then wait until each answers."""
    children = []
    for config, port in configs:
        child = Child(config, port)
        stack.callback(child.stop)
        children.append(child)
    for child in children:
        child.ready()


class ServerLoop:
    """One event loop in a thread serving every delaying proxy or replayed community of the bench (a
    thread each would have ten threads contend for this process's GIL when ten answers fall due at
    once, and the bench would measure that contention instead of the gateway)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def serve(self, client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> int:
        """Listen on a free port of 127.0.0.1 with ``client`` for each connection; the port."""
        port = free_port()
        started = asyncio.run_coroutine_threadsafe(asyncio.start_server(client, "127.0.0.1", port), self.loop)
        started.result(timeout=10)
        return port


class DelayingProxy:
    """A TCP proxy that holds back the first bytes of every answer ``delay`` seconds (a slow community)."""

    def __init__(self, loop: ServerLoop, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = loop.serve(self._client)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        asked = asyncio.Event()

        async def requests() -> None:
            while chunk := await reader.read(65536):
                asked.set()
                up_writer.write(chunk)
                await up_writer.drain()
            up_writer.close()

        async def answers() -> None:
            while chunk := await up_reader.read(65536):
                if asked.is_set():  # the first bytes of the answer to a request: held back
                    await asyncio.sleep(self.delay)
                    asked.clear()
                writer.write(chunk)
                await writer.drain()
            writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(requests(), answers())


class ReplayingCommunity:
    """A remote community as the initiating gateway sees it: one recorded answer of a real responding
    gateway, sent again ``delay`` seconds after each request (HTTP/1.1 keep-alive, next to no CPU here)."""

    def __init__(self, loop: ServerLoop, answer: bytes, delay: float) -> None:
        self.answer = answer
        self.delay = delay
        self.port = loop.serve(self._client)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                await asyncio.sleep(self.delay)
                writer.write(self.answer)
                await writer.drain()


def _recorded_answer(port: int, body: bytes) -> bytes:
    """A real responding gateway's ITI-38 answer to ``body``, as HTTP/1.1 bytes to replay."""
    url = f"http://127.0.0.1:{port}/xca/query"
    envelope, ctype = _envelope(url, body)
    r = httpx.post(url, content=envelope, headers={"Content-Type": ctype}, timeout=60)
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: {r.headers['content-type']}\r\n"
        f"content-length: {len(r.content)}\r\n\r\n"
    ).encode() + r.content


def _community_config(work: Path, i: int, port: int, trust: Trust) -> tuple[Path, str, str]:
    home, repository = f"urn:oid:{ROOT}.{i}", f"{ROOT}.{i}.1"
    path = work / f"community-{i}.toml"
    section, issuers = trust.section(f"c{i}")
    write_config(
        path,
        {
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "data_dir": str(work / f"c{i}"),
                "log_level": "warning",
            },
            "registry": {"home_community_id": home},
            "trust": section,
        },
        {"repository": [{"name": "r", "unique_id": repository}], "trust.issuer": issuers},
    )
    return path, home, repository


def _gateway_config(work: Path, name: str, port: int, directory: list[tuple[str, int]], trust: Trust) -> Path:
    path = work / f"{name}.toml"
    communities = [
        {
            "home_community_id": home,
            "name": home.rsplit(".", 1)[-1],
            "registry_url": f"http://127.0.0.1:{p}/xca/query",
            "repository_url": f"http://127.0.0.1:{p}/xca/retrieve",
            "timeout_s": 30.0,
        }
        for home, p in directory
    ]
    server = {"host": "127.0.0.1", "port": port, "data_dir": str(work / name), "log_level": "warning"}
    section, issuers = trust.section("ig")
    write_config(
        path, {"server": server, "trust": section}, {"community": communities, "trust.issuer": issuers}
    )
    return path


def _publish(port: int, patient: str, path: Path) -> str:
    from xds.client import RepositoryClient, describe_files

    submission, files = describe_files([path], patient, class_code="C00-1", type_code="C01-2")
    with RepositoryClient(f"http://127.0.0.1:{port}/repository") as client:
        outcome = client.provide_and_register(submission, files)
    if not outcome.ok:
        raise RuntimeError(f"publishing failed: {outcome.errors}")
    return submission.documents[0].unique_id


def bench(args: argparse.Namespace) -> int:
    n = args.communities
    print(f"xds bench xca: {n} communities answering {args.delay_ms} ms late; a {args.doc_mb} MB retrieve")
    patient = samples.patient_cx(samples.person_number(random.Random()))
    params = consumer.standard_parameters("FindDocuments", patient=patient)
    delay = args.delay_ms / 1000
    with tempfile.TemporaryDirectory(prefix="xds-bench-xca-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        small = work / "result.txt"
        small.write_text("CRP 42 mg/L\n")
        homes, repos, ports, delayed, replayed = [], [], [], [], []
        configs = []
        trust = Trust(work, [f"c{i}" for i in range(n)] + ["ig", "consumer"])
        for i in range(n):
            port = free_port()
            config, home, repository = _community_config(work, i, port, trust)
            configs.append((config, port))
            homes.append(home), repos.append(repository), ports.append(port)
        serve_all(stack, configs)
        loop = stack.enter_context(ServerLoop())
        for home, port in zip(homes, ports, strict=True):
            _publish(port, patient, small)
            delayed.append((home, DelayingProxy(loop, port, delay).port))
            answer = _recorded_answer(port, consumer.adhoc_query_request("FindDocuments", params, home=home))
            replayed.append((home, ReplayingCommunity(loop, answer, delay).port))
        gateways = {"ig": delayed, "ig-replay": replayed, "ig-direct": [(homes[0], ports[0])]}
        gateway_ports = {name: free_port() for name in gateways}
        serve_all(
            stack,
            [
                (_gateway_config(work, k, gateway_ports[k], d, trust), gateway_ports[k])
                for k, d in gateways.items()
            ],
        )
        failures = _fan_out(args, patient, homes, gateway_ports["ig-replay"], "remote communities (replayed)")
        failures += _fan_out(args, patient, homes, gateway_ports["ig"], "responding gateways on this machine")
        signed = "responding gateways on this machine, signed and verified both ways"
        failures += _fan_out(args, patient, homes, gateway_ports["ig"], signed, trust.consumer(patient))
        big = work / "big.bin"
        with open(big, "wb") as fh:
            fh.write(os.urandom(args.doc_mb * 2**20 - 1) + b"x")
        uid = _publish(ports[0], patient, big)
        sha1 = hashlib.sha1(big.read_bytes()).hexdigest()
        failures += _retrieve(
            homes[0], repos[0], uid, ports[0], gateway_ports["ig-direct"], sha1, args.rounds
        )
    return 1 if failures else 0


def _fan_out(
    args: argparse.Namespace,
    patient: str,
    homes: list[str],
    ig_port: int,
    label: str,
    secure: Callable[[bytes], bytes] | None = None,
) -> int:
    url = f"http://127.0.0.1:{ig_port}/ig/registry"
    params = consumer.standard_parameters("FindDocuments", patient=patient)
    bodies = [consumer.adhoc_query_request("FindDocuments", params, home=h) for h in homes]
    everyone = consumer.adhoc_query_request("FindDocuments", params)
    single: list[list[float]] = [[] for _ in homes]
    fan: list[float] = []
    failures = 0
    with httpx.Client(timeout=60) as client:

        def timed(body: bytes, expected: int) -> float:
            nonlocal failures
            envelope, ctype = _envelope(url, body)
            if secure is not None:  # (the consumer's own signing is not the gateway's time)
                envelope = secure(envelope)
            start = time.perf_counter()
            r = client.post(url, content=envelope, headers={"Content-Type": ctype})
            took = time.perf_counter() - start
            found = r.content.count(b"<rim:ExtrinsicObject") + r.content.count(b":ExtrinsicObject ")
            if r.status_code != 200 or v.RESPONSE_SUCCESS.encode() not in r.content or found < expected:
                failures += 1
            return took

        for body in bodies:  # warm every path once
            timed(body, 1)
        timed(everyone, len(homes))
        for _ in range(args.rounds):
            for i, body in enumerate(bodies):
                single[i].append(timed(body, 1))
            fan.append(timed(everyone, len(homes)))
    medians = [statistics.median(s) for s in single]
    slowest = max(medians)
    fan_median = statistics.median(fan)
    ratio = fan_median / slowest
    verdict = "meets" if ratio <= 1.2 else "ABOVE"
    print(
        f"fan-out to {len(homes)} {label}: {fan_median * 1000:.1f} ms (median of {args.rounds}); "
        f"one community alone: {min(medians) * 1000:.1f}-{slowest * 1000:.1f} ms (medians); "
        f"ratio to the slowest {ratio:.2f}  (target <= 1.20: {verdict})"
    )
    if failures:
        print(f"  failures: {failures} queries did not answer Success with every community's document")
    return failures


def _envelope(url: str, body: bytes) -> tuple[bytes, str]:
    from xds.soap.envelope import build_request

    return build_request(v.ACTION_STORED_QUERY if "/xca/" not in url else v.ACTION_XCA_QUERY, body, to=url)


def _retrieve(
    home: str, repository: str, uid: str, rg_port: int, ig_port: int, sha1: str, rounds: int
) -> int:
    from xds.soap.envelope import build_request

    def body(with_home: bool) -> bytes:
        home_el = f"<xdsb:HomeCommunityId>{home}</xdsb:HomeCommunityId>" if with_home else ""
        return (
            f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>{home_el}'
            f"<xdsb:RepositoryUniqueId>{repository}</xdsb:RepositoryUniqueId>"
            f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
            "</xdsb:RetrieveDocumentSetRequest>"
        ).encode()

    direct_url = f"http://127.0.0.1:{rg_port}/repository"
    gateway_url = f"http://127.0.0.1:{ig_port}/ig/repository"
    failures = 0
    with httpx.Client(timeout=300) as client:

        def timed(url: str, with_home: bool) -> float:
            nonlocal failures
            envelope, ctype = build_request(v.ACTION_RETRIEVE, body(with_home), to=url)
            size = 0
            start = time.perf_counter()
            with client.stream("POST", url, content=envelope, headers={"Content-Type": ctype}) as r:
                for chunk in r.iter_raw():
                    size += len(chunk)
            took = time.perf_counter() - start
            if r.status_code != 200 or size < 2**20:
                failures += 1
            return took

        direct, gateway = [], []
        timed(direct_url, False), timed(gateway_url, True)
        for _ in range(rounds):
            direct.append(timed(direct_url, False))
            gateway.append(timed(gateway_url, True))
        failures += _check_bytes(gateway_url, (home, repository, uid), sha1)
    mid_direct, mid_gateway = statistics.median(direct), statistics.median(gateway)
    ratio = mid_direct / mid_gateway
    verdict = "meets" if ratio >= 0.5 else "BELOW"
    print(
        f"retrieve: through both gateways {mid_gateway * 1000:.0f} ms, direct ITI-43 {mid_direct * 1000:.0f} ms "
        f"(medians of {rounds} alternated rounds); throughput ratio {ratio:.1%}  (target >= 50%: {verdict})"
    )
    return failures


def _check_bytes(url: str, wanted: tuple[str, str, str], sha1: str) -> int:
    """The document read through the gateways is the one stored (SHA-1 of the bytes)."""
    with tempfile.TemporaryDirectory() as out:
        _, docs = consumer.retrieve(url, [wanted], Path(out))
        if len(docs) != 1 or hashlib.sha1(docs[0].path.read_bytes()).hexdigest() != sha1:
            print("  the document read through the gateways is not the one stored")
            return 1
    return 0
