"""Signed reads while another process holds the registry database's write lock: each request's
replay record (ITI TF-2 §3.40.4.2) does not wait for that lock, so a signed FindDocuments keeps
its latency as an unsigned one does (the SQLite write-lock test in tests/repository/test_faults.py)."""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path

import httpx
import pytest
from support import RunningServer, make_config, require_trust
from test_http_trust import ISSUER, find_documents, secured

from xds.metadata import vocabulary as v
from xds.trust.keys import KeySet


def _signed_query_times(keys: KeySet, url: str, count: int) -> list[float]:
    times = []
    ctype = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_STORED_QUERY}"'
    with httpx.Client(timeout=60) as http:
        for _ in range(count):
            data = secured(keys, url, find_documents())  # signed before the clock starts
            started = time.perf_counter()
            response = http.post(url, content=data, headers={"Content-Type": ctype})
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text[:500]
            assert v.RESPONSE_SUCCESS.encode() in response.content
    return times


@pytest.mark.skipif(bool(os.environ.get("XDS_TEST_DATABASE_URL")), reason="SQLite's write lock: SQLite pass")
def test_signed_reads_keep_their_latency_while_the_write_lock_is_held(tmp_path: Path, keys: KeySet) -> None:
    from xds.database import sqlite_url

    data_dir = tmp_path / "data"
    cfg = make_config(data_dir, sqlite_url(data_dir), lock_wait_s=2.0)
    require_trust(cfg, keys, ISSUER)
    with RunningServer(cfg) as server:
        url = f"{server.url}/registry"
        _signed_query_times(keys, url, 5)  # warm
        unloaded = _signed_query_times(keys, url, 10)
        holder = sqlite3.connect(data_dir / "registry.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            locked = _signed_query_times(keys, url, 10)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        unloaded += _signed_query_times(keys, url, 10)
    p50_locked, p50_unloaded = statistics.median(locked), statistics.median(unloaded)
    print(
        f"write lock held: signed FindDocuments p50 {p50_locked * 1000:.1f} ms vs {p50_unloaded * 1000:.1f} ms"
    )
    assert p50_locked <= 2 * p50_unloaded + 0.05
