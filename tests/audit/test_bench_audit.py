"""``xds bench audit`` end to end, small: two real servers (auditing off, and on with the database
and syslog over UDP), alternated; every event reaches the collector before the ratios are printed."""

from __future__ import annotations

import re

import pytest
from support import run_bench


def test_bench_audit_prints_each_ratio_and_counts_every_datagram(capsys: pytest.CaptureFixture[str]) -> None:
    requests = 30
    rc = run_bench(
        "audit",
        "--requests",
        str(requests),
        "--rounds",
        "2",  # off first, then on first
        "--workers",
        "1",
        "--concurrency",
        "4",
        "--settle",
        "0",
    )
    assert rc == 0  # no failed request
    out = capsys.readouterr().out
    for kind in ("register", "query"):
        line = re.search(
            rf"{kind}: audit on ([\d,]+)/s, off ([\d,]+)/s, ratio ([\d.]+)% \(target >= 95%: (meets|BELOW); "
            r"median of each round's on/off [\d.]+%\)  \(rounds: off [\d,]+-[\d,]+, on [\d,]+-[\d,]+\); "
            r"every event delivered [\d.]+ s \(median\) after the run's last answer",
            out,
        )
        assert line, out
        assert all(int(g.replace(",", "")) > 0 for g in line.groups()[:2])
    # the warm-up registrations and the measured registrations and queries of the audited server
    assert f"audit events in the database: {5 * requests:,} of {5 * requests:,}" in out, out
    received = int(re.search(r"syslog datagrams received: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert received == 5 * requests, out
