"""The operator's side of ``xds serve``: /health, /ready, /metrics (Prometheus, summed over
workers), the checks made before starting, and SIGTERM draining requests in flight."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from operating import find_documents, provide, slow_provide, start_server
from support import free_port, refusing_port

from xds.client import RepositoryClient
from xds.metadata import vocabulary as v


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition("}")[0]))
        if all(found.get(k) == value for k, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_ready_and_metrics(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(timeout=30) as http:
        assert http.get(f"{server.url}/health").text == "ok\n"
        ready = http.get(f"{server.url}/ready")
        assert ready.status_code == 200, ready.text
        lines = ready.text.splitlines()
        assert lines[0] == "ready"
        assert {line.split(":")[0] for line in lines[1:]} == {
            "database",
            "migrations",
            "data_dir",
            "repository default",
        }
        before = http.get(f"{server.url}/metrics").text
        with RepositoryClient(f"{server.url}/repository") as client:
            path = tmp_path / "doc"
            outcome, _ = provide(client, path, os.urandom(5000))
            assert outcome.ok
        assert find_documents(http, f"{server.url}/registry")[0] == v.RESPONSE_SUCCESS
        http.post(
            f"{server.url}/registry", content=b"not soap", headers={"Content-Type": "application/soap+xml"}
        )
        after = http.get(f"{server.url}/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return _sample(text, name, **labels) - _sample(before, name, **labels)

    assert delta("xds_requests_total", transaction="ITI-41", outcome="success") == 1
    assert delta("xds_requests_total", transaction="ITI-18", outcome="success") == 1
    assert delta("xds_requests_total", transaction="unknown", outcome="fault") == 1
    assert delta("xds_request_duration_seconds_count", transaction="ITI-41") == 1
    assert _sample(text, "xds_blob_store_blobs", repository="default") == 1
    assert _sample(text, "xds_blob_store_bytes", repository="default") == 5000
    assert "xds_database_errors_total" in text or "# HELP xds_database_errors" in text


def test_metrics_are_summed_over_workers(tmp_path: Path, database_url: str) -> None:
    """Two workers: whichever answers the scrape, the counts are every worker's together."""
    metrics_dir = tmp_path / "data" / "metrics"

    def workers_counted() -> int:
        return len({p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")})

    with start_server(tmp_path / "data", database_url, args=("--workers", "2")) as server:
        sent = 0
        while sent < 200 and (sent < 20 or workers_counted() < 2):
            for _ in range(10):
                with httpx.Client(timeout=30) as http:  # a new connection each: either worker
                    assert find_documents(http, f"{server.url}/registry")[0] == v.RESPONSE_SUCCESS
                sent += 1
            time.sleep(0.3)
        assert workers_counted() == 2, "one worker answered every request"

        def scrape() -> str:
            with httpx.Client(timeout=30) as http:  # either worker answers
                return http.get(f"{server.url}/metrics").text

        deadline = time.monotonic() + 10  # each worker writes its tallies once a second
        while _sample(scrape(), "xds_requests_total", transaction="ITI-18", outcome="success") < sent:
            assert time.monotonic() < deadline, "the workers' counts never added up"
            time.sleep(0.2)
        for _ in range(6):
            text = scrape()
            assert _sample(text, "xds_requests_total", transaction="ITI-18", outcome="success") == sent
            assert _sample(text, "xds_request_duration_seconds_count", transaction="ITI-18") == sent


def _serve_command(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "xds.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_startup_says_what_is_wrong(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    done = _serve_command("--data-dir", str(not_a_dir / "data"))
    assert done.returncode == 1
    assert "xds: cannot serve: data_dir: FAIL" in done.stderr and "not writable" in done.stderr
    assert "Traceback" not in done.stderr
    with refusing_port() as port:  # nothing listens there
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        done = _serve_command("--data-dir", str(tmp_path / "data"), "--database-url", url)
    assert done.returncode == 1
    assert "xds: cannot serve: database: FAIL" in done.stderr and "cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_requests_in_flight(tmp_path: Path, database_url: str, workers: int) -> None:
    """SIGTERM: no new connection is taken, the ITI-41 in flight completes and is acknowledged,
    and the process (with its workers) exits."""
    with start_server(tmp_path / "data", database_url, args=("--workers", str(workers))) as server:
        release, started = threading.Event(), threading.Event()
        answer: dict[str, object] = {}
        sender = threading.Thread(
            target=slow_provide, args=(f"{server.url}/repository", release, started, answer)
        )
        sender.start()
        try:
            assert started.wait(30)
            time.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            refused = False
            while time.monotonic() < deadline and not refused:
                try:
                    httpx.get(f"{server.url}/health", timeout=1)
                    time.sleep(0.05)
                except httpx.HTTPError:
                    refused = True
            assert refused, "new connections were still taken after SIGTERM"
            assert server.proc.poll() is None, "exited with a request in flight"
        finally:
            release.set()
            sender.join(timeout=30)
        outcome = answer.get("outcome")
        assert outcome is not None and outcome.ok, answer  # type: ignore[attr-defined]
        assert server.proc.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn ends by the signal it got


def test_sigterm_gives_up_on_a_stalled_request_after_drain_s(tmp_path: Path, database_url: str) -> None:
    env = {"XDS_SERVER_DRAIN_S": "2"}
    with start_server(tmp_path / "data", database_url, env=env) as server:
        release, started = threading.Event(), threading.Event()
        sender = threading.Thread(target=slow_provide, args=(f"{server.url}/repository", release, started))
        sender.start()
        try:
            assert started.wait(30)
            time.sleep(0.2)  # the first half of the document has reached the server
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(timeout=15)
            waited = time.monotonic() - signalled
        finally:
            release.set()
            sender.join(timeout=30)
        print(f"SIGTERM with a stalled request, drain_s = 2: exited after {waited:.2f} s")
        assert 1.5 < waited < 10


def test_ready_names_migrations_not_applied(tmp_path: Path) -> None:
    from xds.database import _migration_graph, migrate, open_engine
    from xds.operations.health import migrations_check

    engine = open_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        migrate(engine, "0003")  # the registry's first three, no other branch
        check = migrations_check(engine)
        heads, _ = _migration_graph()
        assert not check.ok and all(head in check.detail for head in heads), (check, heads)
        migrate(engine)
        assert migrations_check(engine).ok
    finally:
        engine.dispose()


def test_ready_answers_ready_to_probes_that_arrive_together(server) -> None:  # type: ignore[no-untyped-def]
    """Two /ready checks at once (a load balancer and an orchestrator) must not take each other's
    write probe away and so report a writable directory as unwritable (a false 503)."""
    import asyncio

    async def probes() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as http:
            answers: list[httpx.Response] = []
            for _ in range(8):  # bounded: 8 rounds of 16 probes at once
                answers += await asyncio.gather(*(http.get(f"{server.url}/ready") for _ in range(16)))
            return answers

    not_ready = [r.text for r in asyncio.run(probes()) if r.status_code != 200]
    assert not not_ready, not_ready[0]


def test_ready_details_and_metrics_are_for_the_operators_networks(tmp_path: Path, database_url: str) -> None:
    """A client outside ``[server] operations_clients`` learns only whether the server is ready (a load
    balancer needs no more) and gets 403 from /metrics; paths and counts stay with the operator."""
    from support import RunningServer, make_config

    cfg = make_config(tmp_path / "data", database_url)
    cfg.server.operations_clients = "10.20.0.0/16"  # the tests' client, 127.0.0.1, is not in it
    with RunningServer(cfg) as running, httpx.Client(timeout=30) as http:
        ready = http.get(f"{running.url}/ready")
        assert ready.status_code == 200 and ready.text == "ready\n"
        metrics = http.get(f"{running.url}/metrics")
        assert metrics.status_code == 403 and "xds_" not in metrics.text
        assert http.get(f"{running.url}/health").text == "ok\n"


def test_operations_clients_are_networks() -> None:
    from starlette.requests import Request

    from xds.config import Config
    from xds.operations.routes import OperatorNetworks

    def asked_from(host: str) -> Request:
        return Request({"type": "http", "client": (host, 40000), "headers": []})

    networks = OperatorNetworks("127.0.0.0/8, ::1/128 ,10.20.0.0/16")
    for inside in ("127.0.0.1", "::1", "10.20.3.4", "::ffff:10.20.3.4"):
        assert networks.admits(asked_from(inside)), inside
    for outside in ("10.21.0.1", "192.0.2.7", "2001:db8::1", "not-an-address"):
        assert not networks.admits(asked_from(outside)), outside
    assert OperatorNetworks("*").admits(asked_from("192.0.2.7"))
    with pytest.raises(ValueError, match="operations_clients"):
        Config.from_dict({"server": {"operations_clients": "10.0.0.0/8,intranet"}})
