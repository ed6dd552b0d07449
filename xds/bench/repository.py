"""``xds bench provide`` / ``xds bench retrieve``: repository throughput against same-run floors.

provide: 10 KB documents per second through ITI-41 (MTOM, in-process registration) next to the
floor ``/_bench/provide`` — the same server receiving the same MTOM bytes through the same SOAP
endpoint and answering Success without parsing metadata or storing anything.

retrieve: 10 KB documents per second through ITI-43 next to ``/_bench/retrieve`` — the same server
answering the same requests with the same document bytes held in memory.

big: one large document (default 1 GB) in with ITI-41 and out with ITI-43, with the server's peak
RSS growth (Linux ``VmHWM`` after resetting it through ``clear_refs``) and the throughput of each
direction next to a plain streaming HTTP download of the same bytes from the same server
(``/_bench/download/<sha1>``), the three run in turn three times, medians reported.

Every figure is the median of rounds in which ours and its floor alternate.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.routing import Route

from xds import samples
from xds.bench.harness import Rounds, alternate, drive, http_request, running_server
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.soap.mtom import build_mtom_request

if TYPE_CHECKING:
    from xds.client import RepositoryClient
    from xds.repository.service import RepositoryService


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, helptext in (
        ("provide", "ITI-41 10 KB documents per second vs. receive-only floor, and a 1 GB document"),
        ("retrieve", "ITI-43 10 KB documents per second vs. from-memory floor, and a 1 GB document"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--requests", type=int, default=3000, help="documents per measured run")
        p.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive connections")
        p.add_argument("--workers", type=int, default=2, help="server worker processes")
        p.add_argument("--doc-kb", type=int, default=10, help="size of the small documents")
        p.add_argument("--big-mb", type=int, default=1024, help="size of the large document (0 = skip)")


def provide_messages(
    count: int, doc_kb: int, url: str, *, seed: int = 7
) -> tuple[list[bytes], list[str], list[str]]:
    """``count`` one-document ITI-41 MTOM requests: (bodies, content types, document uniqueIds)."""
    rng = random.Random(seed)
    patients = [samples.patient_cx(samples.person_number(rng)) for _ in range(max(1, count // 20))]
    bodies, ctypes, uids = [], [], []
    for _ in range(count):
        sample = samples.submission(rng.choice(patients), rng=rng)
        doc = sample.documents[0]
        doc.slots = [s for s in doc.slots if s.name not in ("hash", "size", "repositoryUniqueId")]
        content = rng.randbytes(doc_kb * 1024)
        cid = f"{uuid.uuid4().hex}@bench"
        body = (
            f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}">'.encode()
            + ebrim.submit_objects_request_bytes(sample.submission)
            + f'<xdsb:Document id="{doc.id}"><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cid}"/></xdsb:Document>'.encode()
            + b"</xdsb:ProvideAndRegisterDocumentSetRequest>"
        )
        data, ctype = build_mtom_request(
            v.ACTION_PROVIDE_AND_REGISTER, body, [(cid, doc.mime_type, content)], to=url
        )
        bodies.append(data)
        ctypes.append(ctype)
        uids.append(doc.unique_id or "")
    return bodies, ctypes, uids


def retrieve_message(repository_id: str, unique_id: str) -> bytes:
    body = (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:RepositoryUniqueId>{repository_id}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{unique_id}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"
        f"</xdsb:RetrieveDocumentSetRequest>"
    )
    return build_request(v.ACTION_RETRIEVE, body.encode())[0]


def _repository_id(host: str, port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/_bench/repository-id", timeout=10) as r:
        return r.read().decode().strip()


def bench(args: argparse.Namespace) -> int:
    n, c = args.requests, args.concurrency
    warm = max(1, n // 10)
    print(
        f"xds bench {args.bench}: {n} documents of {args.doc_kb} KB, {c} connections, {args.workers} workers"
    )
    rounds = 3 if args.bench == "provide" else 1  # each provide round stores documents of its own
    bodies, ctypes, uids = provide_messages(n * rounds + warm, args.doc_kb, "http://127.0.0.1/repository")
    failures = 0
    with running_server(workers=args.workers) as (host, port):
        provide = [
            http_request(host, port, "/repository", b, ct) for b, ct in zip(bodies, ctypes, strict=True)
        ]
        floor_provide = [
            http_request(host, port, "/_bench/provide", b, ct) for b, ct in zip(bodies, ctypes, strict=True)
        ]
        ok = v.RESPONSE_SUCCESS.encode()
        drive(host, port, floor_provide[:warm], c, ok)
        drive(host, port, provide[n * rounds :], c, ok)
        # floor and ours alternate; the median round of each counts (the machine's noise moves a
        # single run by ±20 %)
        runs = alternate(
            host,
            port,
            lambda r: floor_provide[:n],
            lambda r: provide[r * n : (r + 1) * n],
            rounds=rounds,
            concurrency=c,
            floor_ok=ok,
            our_ok=ok,
        )
        failures += _failures(runs)
        if args.bench == "provide":
            _report("provide", *runs.median(), 0.40, "documents/s")
            print(runs.spread("provide", " documents/s"))
        else:
            repo_id = _repository_id(host, port)
            ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_RETRIEVE}"'
            msgs = [retrieve_message(repo_id, uid) for uid in uids]
            retrieve = [http_request(host, port, "/repository", m, ctype) for m in msgs]
            floor_retrieve = [http_request(host, port, "/_bench/retrieve", m, ctype) for m in msgs]
            drive(host, port, floor_retrieve, c, ok)  # fills the floor's memory and warms both paths
            drive(host, port, retrieve[n:], c, ok)
            # floor and ours alternate for three rounds; the median round of each counts, as for
            # every benchmark
            runs = alternate(
                host,
                port,
                lambda r: floor_retrieve[:n],
                lambda r: retrieve[:n],
                rounds=3,
                concurrency=c,
                floor_ok=ok,
                our_ok=ok,
            )
            _report("retrieve", *runs.median(), 0.50, "documents/s")
            print(runs.spread("retrieve", " documents/s"))
            failures += _failures(runs)
    if args.big_mb:
        failures += big_document(args.big_mb)
    return 1 if failures else 0


def _failures(runs: Rounds) -> int:
    """How many requests of ``runs`` failed, said with the first failure when there are any."""
    ours, floor = runs.failures
    if ours or floor:
        print(f"  failures: {ours} ours, {floor} floor; first: {runs.first_failure}")
    return ours + floor


def _report(label: str, ours: float, floor: float, target: float, unit: str) -> None:
    ratio = ours / floor if floor else 0.0
    verdict = "meets" if ratio >= target else "BELOW"
    print(
        f"{label}: {ours:,.0f} {unit}  floor {floor:,.0f} {unit}  ratio {ratio:.1%}  (target >= {target:.0%}: {verdict})"
    )


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


ROUNDS = 3


def big_document(size_mb: int) -> int:
    """One large document in and out; peak RSS growth and throughput vs. a plain download."""
    from xds.client import RepositoryClient

    print(f"big document: {size_mb} MB")
    with tempfile.TemporaryDirectory(prefix="xds-bench-big-") as tmp:
        path = Path(tmp) / "big.bin"
        digest = _write_big_file(path, size_mb)
        with (
            running_server(workers=1) as (host, port),
            RepositoryClient(f"http://{host}:{port}/repository") as client,
        ):
            legs = _BigLegs(client, host, port, path, digest)
            # Each direction and the plain download run in turn, ROUNDS times; the median of each
            # counts, so that page-cache and disk write-back effects fall on all three alike. Each
            # leg starts from a clean page cache (os.sync): otherwise the write-back of the
            # previous leg's gigabyte lands on whichever leg comes next.
            for _ in range(ROUNDS):
                if not legs.round():
                    return 1
        return _report_big(size_mb * 1024 * 1024, legs)


def _write_big_file(path: Path, size_mb: int) -> str:
    """``size_mb`` MB of random bytes (one random MB, rotated per MB) written to ``path``; their SHA-1."""
    sha1 = hashlib.sha1()
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for i in range(size_mb):
            chunk = block[i % 997 :] + block[: i % 997]
            sha1.update(chunk)
            fh.write(chunk)
    return sha1.hexdigest()


class _BigLegs:
    """The three legs of the big-document benchmark (ITI-41 in, ITI-43 out, plain download), their
    times and the server's peak RSS growth in each direction."""

    def __init__(self, client: RepositoryClient, host: str, port: int, path: Path, digest: str) -> None:
        self.client, self.host, self.port, self.path, self.digest = client, host, port, path, digest
        self.pid = _server_pid(host, port)
        self.repo_id = _repository_id(host, port)
        self.ins: list[float] = []
        self.outs: list[float] = []
        self.plains: list[float] = []
        self.grow_in = self.grow_out = 0
        self.same = True

    def round(self) -> bool:
        """One round of the three legs; False (said) when the provide or the removal failed."""
        from xds.client import describe_files

        client, tmp = self.client, self.path.parent
        sub, docs = describe_files([self.path], samples.patient_cx("13116900216"))
        _reset_peak(self.pid)
        base = _status(self.pid)["VmRSS"]
        os.sync()
        t0 = time.perf_counter()
        outcome = client.provide_and_register(sub, docs)
        self.ins.append(time.perf_counter() - t0)
        self.grow_in = max(self.grow_in, _status(self.pid)["VmHWM"] - base)
        if not outcome.ok:
            print(f"  provide failed: {outcome.errors}")
            return False
        uid = sub.documents[0].unique_id or ""
        _reset_peak(self.pid)
        base = _status(self.pid)["VmRSS"]
        os.sync()
        t0 = time.perf_counter()
        _, found = client.retrieve(self.repo_id, [uid], tmp / "out")
        self.outs.append(time.perf_counter() - t0)
        self.grow_out = max(self.grow_out, _status(self.pid)["VmHWM"] - base)
        self.same = self.same and bool(found) and _sha1_of(found[0].path) == self.digest
        if found:
            found[0].path.unlink()
        self.plains.append(self._plain_download(tmp / "plain.bin"))
        # ITI-86: the next round stores the bytes anew rather than finding them stored
        removed = client.remove(self.repo_id, [uid])
        if not removed.ok:
            print(f"  remove failed: {removed.errors}")
            return False
        return True

    def _plain_download(self, plain_path: Path) -> float:
        """Seconds to stream the same bytes from ``/_bench/download`` into a file, as the ITI-43
        client saves them."""
        os.sync()
        t0 = time.perf_counter()
        url = f"http://{self.host}:{self.port}/_bench/download/{self.digest}"
        with self.client.http.stream("GET", url) as r, open(plain_path, "wb") as out:
            for chunk in r.iter_raw():
                out.write(chunk)
        seconds = time.perf_counter() - t0
        plain_path.unlink()
        return seconds


def _report_big(size: int, legs: _BigLegs) -> int:
    """Print each direction's median throughput next to the plain download's and its peak RSS
    growth; 0 when the retrieved bytes were identical, else 1."""
    t_in, t_out, t_plain = (statistics.median(times) for times in (legs.ins, legs.outs, legs.plains))
    mb = size / 1e6
    plain = mb / t_plain
    for label, seconds, grow in (("in (ITI-41)", t_in, legs.grow_in), ("out (ITI-43)", t_out, legs.grow_out)):
        rate = mb / seconds
        ok_mem = grow <= 64 * 1024 * 1024
        ok_rate = rate >= 0.5 * plain
        print(
            f"  {label}: {rate:,.0f} MB/s vs plain download {plain:,.0f} MB/s ({rate / plain:.0%}, target >= 50%: "
            f"{'meets' if ok_rate else 'BELOW'}); peak RSS growth {grow / 2**20:.1f} MB "
            f"(target <= 64 MB: {'meets' if ok_mem else 'ABOVE'})"
        )
    print(f"  retrieved bytes identical: {legs.same}")
    return 0 if legs.same else 1


def _server_pid(host: str, port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/_bench/pid", timeout=10) as r:
        return int(r.read())


def _sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def floor_routes(repo: RepositoryService) -> list[Route]:
    """The repository floors: receive-only ITI-41, from-memory ITI-43, plain download, ids."""
    from starlette.requests import Request
    from starlette.responses import FileResponse, PlainTextResponse, Response

    from xds.metadata.registry_response import registry_response
    from xds.soap.endpoint import SoapEndpoint
    from xds.soap.envelope import Attachment, SoapRequest, SoapResponse

    memory: dict[str, tuple[bytes, str]] = {}

    async def provide(_: SoapRequest) -> SoapResponse:
        return SoapResponse(v.ACTION_PROVIDE_AND_REGISTER_RESPONSE, registry_response())

    async def retrieve(request: SoapRequest) -> SoapResponse:
        x = "{" + v.NS_XDSB + "}"
        parts, attachments = [], []
        for req in request.body.iter(x + "DocumentRequest"):
            uid = req.findtext(x + "DocumentUniqueId") or ""
            if uid not in memory:
                row = repo.stored_rows([uid])[uid]
                with repo.store.open(row.sha1) as fh:
                    memory[uid] = (fh.read(), row.mime_type)
            data, mime = memory[uid]
            cid = f"doc{len(attachments)}@floor"
            attachments.append(Attachment.from_bytes(cid, mime, data))
            parts.append(
                f"<xdsb:DocumentResponse><xdsb:RepositoryUniqueId>{repo.unique_id}</xdsb:RepositoryUniqueId>"
                f"<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId><xdsb:mimeType>{mime}</xdsb:mimeType>"
                f'<xdsb:Document><xop:Include xmlns:xop="{v.NS_XOP}" href="cid:{cid}"/></xdsb:Document>'
                f"</xdsb:DocumentResponse>"
            )
        body = (
            f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{v.NS_XDSB}">'.encode()
            + registry_response()
            + "".join(parts).encode()
            + b"</xdsb:RetrieveDocumentSetResponse>"
        )
        return SoapResponse(v.ACTION_RETRIEVE_RESPONSE, body, attachments=attachments)

    async def download(request: Request) -> Response:
        sha1 = request.path_params["sha1"]
        path = repo.store.path(sha1)
        if len(sha1) != 40 or not path.is_file():
            return PlainTextResponse("no such blob\n", status_code=404)
        return FileResponse(path, media_type="application/octet-stream")

    async def repository_id(_: Request) -> Response:
        return PlainTextResponse(repo.unique_id)

    async def pid(_: Request) -> Response:
        return PlainTextResponse(str(os.getpid()))

    tmp = str(repo.store.tmp)
    return [
        Route(
            "/_bench/provide",
            SoapEndpoint({v.ACTION_PROVIDE_AND_REGISTER: provide}, tmp_dir=tmp, spool_threshold=256 * 1024),
        ),
        Route("/_bench/retrieve", SoapEndpoint({v.ACTION_RETRIEVE: retrieve})),
        Route("/_bench/download/{sha1}", download, methods=["GET"]),
        Route("/_bench/repository-id", repository_id, methods=["GET"]),
        Route("/_bench/pid", pid, methods=["GET"]),
    ]
