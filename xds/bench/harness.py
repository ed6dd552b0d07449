"""The benchmark harness: ``xds serve`` in a child process and a keep-alive HTTP/1.1 load generator.

Floors and the server under test are driven alternately (:func:`alternate`), so that a burst of
noise on the machine hits both; every benchmark reports against a floor measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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


# -------------------------------------------------------------------------------------------------
# the server under test
# -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    """A running ``xds serve``: where it listens (``host, port = server`` unpacks that) and the
    process id of its main process, whose children are its workers and its audit delivery."""

    host: str
    port: int
    pid: int

    def __iter__(self) -> Iterator[str | int]:
        yield self.host
        yield self.port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    *, workers: int, database_url: str = "", env: dict[str, str] | None = None, data_dir: str = ""
) -> Iterator[tuple[str, int]]:
    """``xds serve`` in a child process with the benchmark floor route enabled (on ``data_dir``, the
    caller's to remove, or a temporary one)."""
    own = not data_dir
    data_dir = data_dir or tempfile.mkdtemp(prefix="xds-bench-")
    port = free_port()
    cmd = [sys.executable, "-m", "xds.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", data_dir, "--workers", str(workers)]
    if database_url:
        cmd += ["--database-url", database_url]
    env = dict(os.environ, XDS_SERVER_BENCH_FLOOR="1", XDS_SERVER_LOG_LEVEL="warning", **(env or {}))
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
        yield Server("127.0.0.1", port, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if own:
            shutil.rmtree(data_dir, ignore_errors=True)


def cpu_seconds(pid: int) -> float | None:
    """CPU time used so far by process ``pid`` and every process below it, every thread's
    (``/proc/PID/task/TID/schedstat``, nanoseconds); None where there is no ``/proc``. A process
    that ended before the call is not counted: take the difference over a span in which none does."""
    try:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", "rb") as f:
                    parents[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return None
    tree, grew = {pid}, True
    while grew:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    total = 0
    for member in tree:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{member}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{member}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
    return total / 1e9


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


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
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
                status, body = await read_response(reader)
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
