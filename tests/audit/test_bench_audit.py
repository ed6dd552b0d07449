"""``xds bench audit`` end to end, small: two real servers (auditing off, and on with the database
and syslog over UDP), alternated; every event reaches the collector before the ratios are printed."""

from __future__ import annotations

import os
import re

import pytest
from support import run_bench


def test_bench_audit_prints_each_ratio_and_counts_every_datagram(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from xds.bench import audit

    measured: list[str] = []  # which server each measured run was of, in turn
    add = audit.Runs.add

    def noting(self: audit.Runs, label: str, run: audit.RunResult, start: int = 0) -> None:
        measured.append(label)
        add(self, label, run, start)

    monkeypatch.setattr(audit.Runs, "add", noting)
    requests = 30
    rc = run_bench(
        "audit",
        "--requests",
        str(requests),
        "--queries",
        str(requests),
        "--rounds",
        "2",
        "--starts",
        "2",
        "--workers",
        "1",
        "--concurrency",
        "4",
        "--settle",
        "0",
    )
    assert rc == 0  # no failed request
    # every run straight after the other server's run of the same transaction: off, then on
    assert measured == ["off", "on"] * 4
    out = capsys.readouterr().out
    for kind in ("register", "query"):
        line = re.search(
            rf"{kind}: audit on ([\d,]+)/s, off ([\d,]+)/s, ratio ([\d.]+)% ± [\d.]+% \(target >= 95%: (meets|BELOW); "
            r"median of each round's on/off [\d.]+%\)  \(rounds: off [\d,]+-[\d,]+, on [\d,]+-[\d,]+; "
            r"starts [\d.]+%-[\d.]+%\); "
            r"every event delivered [\d.]+ s \(median\) after the run's last answer, ([\d,]+) µs of CPU per event",
            out,
        )
        assert line, out
        assert all(int(g.replace(",", "")) > 0 for g in line.groups()[:2])
        assert int(line.group(5).replace(",", "")) > 0  # the delivery process's work is seen
    # each start's warm-up registrations and queries, and the two rounds' of the audited server
    assert f"audit events in the database: {8 * requests:,} of {8 * requests:,}" in out, out
    received = int(re.search(r"syslog datagrams received: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert received == 8 * requests, out


def test_cpu_seconds_counts_the_processes_below_the_one_named() -> None:
    """The delivery's CPU is read as the server's process tree's: a child's work is counted."""
    import subprocess
    import sys

    from xds.bench.harness import cpu_seconds

    before = cpu_seconds(os.getpid())
    if before is None:
        pytest.skip("no /proc on this system")
    burn = (
        "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\nsys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        after = cpu_seconds(os.getpid())
        assert after is not None and after - before >= 0.3  # the child's 0.3 s, and ours
        alone = cpu_seconds(child.pid)
        assert alone is not None and 0.3 <= alone < after - before + 0.01
    finally:
        child.communicate(b"")
